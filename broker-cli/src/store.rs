//! Which inventory the CLI opens: the PostgreSQL database the `inventory` setting (or
//! `BROKER_INVENTORY`) names — its handoff targets too — else `inventory.yaml` (and
//! `targets.yaml`) in the broker directory; and `broker db`.

use std::sync::Arc;

use broker_core::{Broker, Error, Result, Settings};

use crate::cli::DbCommand;
use crate::output::write_stdout;

/// A broker over the inventory the settings name.
///
/// # Errors
/// A database that cannot be reached or refuses (naming its URL without password); invalid settings.
pub fn broker(settings: Settings) -> Result<Broker> {
    match settings.inventory_database()? {
        None => Broker::new(settings, broker_providers::registry()),
        Some(url) => {
            let (inventory, targets) = open(&url)?;
            Broker::with_stores(settings, broker_providers::registry(), inventory, targets)
        }
    }
}

/// The inventory and the handoff targets of one database.
type Stores = (
    Arc<dyn broker_core::InventoryStore>,
    Arc<dyn broker_core::handoff::TargetStore>,
);

#[cfg(feature = "postgres")]
fn open(url: &broker_core::secrecy::SecretString) -> Result<Stores> {
    let inventory = broker_postgres::PostgresStore::open(url)?;
    let targets = Arc::new(inventory.targets());
    Ok((Arc::new(inventory), targets))
}

#[cfg(not(feature = "postgres"))]
fn open(_url: &broker_core::secrecy::SecretString) -> Result<Stores> {
    Err(without_postgres())
}

#[cfg(not(feature = "postgres"))]
fn without_postgres() -> Error {
    Error::configuration(
        "`inventory` names a PostgreSQL database, but this broker was built without the \
         `postgres` feature; build it with `--features postgres` or unset `inventory`",
    )
}

/// `broker db migrate` and `broker db status`.
///
/// # Errors
/// `inventory` names no database; the database cannot be reached or refuses.
pub fn db(command: DbCommand, settings: &Settings) -> Result<i32> {
    let Some(url) = settings.inventory_database()? else {
        return Err(Error::configuration(
            "`broker db` works on a shared inventory database: set `inventory: postgres://…` in \
             the settings (or BROKER_INVENTORY); the inventory is the file in the broker directory now",
        ));
    };
    run_db(command, &url)
}

#[cfg(feature = "postgres")]
fn run_db(command: DbCommand, url: &broker_core::secrecy::SecretString) -> Result<i32> {
    use broker_core::InventoryStore;
    let store = broker_postgres::PostgresStore::connect(url)?;
    let text = match command {
        DbCommand::Migrate => {
            let ran = store.migrate()?;
            let mut text: String = ran
                .iter()
                .map(|m| format!("applied {}: {}\n", m.version, m.name))
                .collect();
            if ran.is_empty() {
                text = format!("{}: the schema is up to date\n", store.location());
            }
            text
        }
        DbCommand::Status => {
            let status = store.status()?;
            let mut text = format!("{}\n", store.location());
            for (version, at) in &status.applied {
                text.push_str(&format!("applied {version} at {at} UTC\n"));
            }
            for m in &status.pending {
                text.push_str(&format!("pending {}: {}\n", m.version, m.name));
            }
            text
        }
    };
    write_stdout(&text)?;
    Ok(0)
}

#[cfg(not(feature = "postgres"))]
fn run_db(_command: DbCommand, _url: &broker_core::secrecy::SecretString) -> Result<i32> {
    Err(without_postgres())
}
