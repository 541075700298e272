//! Moving records between stores: `broker inventory --export FILE` writes the inventory (whatever
//! store holds it) as an `inventory.yaml` in the Python broker's format, `--import FILE` adds such
//! a file's records to it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::inventory::{InventoryStore, emit_records, parse_inventory};

/// Writes every record of `store` to the file `path` (replaced atomically; a new file is readable
/// by its owner only, as records may hold secrets); returns how many.
///
/// # Errors
/// The store cannot be read; a record cannot be written as YAML; the file cannot be written.
pub fn export(store: &dyn InventoryStore, path: &Path) -> Result<usize> {
    let records = store.list()?;
    let text = emit_records(path, &records)?;
    crate::files::replace(path, text.as_bytes(), "writing the exported inventory")?;
    Ok(records.len())
}

/// Adds the records of the inventory file `path` to `store`, each replacing a record of the same
/// identity; returns how many.
///
/// # Errors
/// The file cannot be read or parsed ([`Error::Parse`] naming line and column; nothing is added);
/// the store cannot be written.
pub fn import(store: &dyn InventoryStore, path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("reading the inventory to import", path, e))?;
    let records = parse_inventory(path, &text)?;
    store.put(&records)?;
    Ok(records.len())
}
