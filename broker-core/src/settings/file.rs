//! The settings file as a document `broker config` changes. Reached through
//! [`crate::cli_support`]: a test suite reads settings, it does not edit the file.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::{
    SETTINGS_FILE, child_mapping, dotted_keys, existing_key_ci, key_ci, lookup, parse_settings_text,
};
use crate::error::{Error, Result};

/// The settings file as a document to change (`broker config set|init|restore`).
///
/// Changes are written atomically after a backup to `broker_settings.bak`. The file is rewritten by a
/// YAML emitter, so comments in it are not kept (the backup has them).
#[derive(Debug, Clone)]
pub struct SettingsFile {
    path: PathBuf,
}

impl SettingsFile {
    /// The settings file of a broker directory.
    pub fn in_directory(directory: &Path) -> Self {
        SettingsFile {
            path: directory.join(SETTINGS_FILE),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backup's path.
    pub fn backup_path(&self) -> PathBuf {
        self.path.with_file_name("broker_settings.bak")
    }

    /// The file's content (an empty mapping when there is no file). Environment overrides are not
    /// applied: this is what is on disk.
    ///
    /// # Errors
    /// Read and parse errors.
    pub fn read(&self) -> Result<Mapping> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => parse_settings_text(&self.path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mapping::new()),
            Err(e) => Err(Error::io("reading settings", &self.path, e)),
        }
    }

    /// The file's content at a dotted path (`Null` where it has nothing), as [`lookup`] finds it
    /// (`broker config edit CHUNK`).
    ///
    /// # Errors
    /// Read and parse errors.
    pub fn read_at(&self, path: &str) -> Result<Value> {
        let doc = Value::Mapping(self.read()?);
        Ok(lookup(&doc, path).cloned().unwrap_or(Value::Null))
    }

    /// Sets the value at a dotted path (`AnsibleTower.instances.prod.base_url`), creating mappings on
    /// the way; keys match case-insensitively. Returns the backup path when there was a file to back up.
    ///
    /// # Errors
    /// Read, parse and write errors.
    pub fn set(&self, chunk: &str, value: Value) -> Result<Option<PathBuf>> {
        let mut doc = self.read()?;
        let path: Vec<String> = dotted_keys(chunk).map(str::to_owned).collect();
        if path.is_empty() {
            match value {
                Value::Mapping(m) => doc = m,
                _ => return Err(Error::usage("the whole settings file must be a mapping")),
            }
        } else {
            create_path_as_written(&mut doc, &path);
            replace_path_ci(&mut doc, &path, value);
        }
        self.write(&doc)
    }

    /// Writes `text` as the settings file (after checking it parses), backing up an existing file.
    ///
    /// # Errors
    /// Parse and write errors.
    pub fn init(&self, text: &str) -> Result<Option<PathBuf>> {
        parse_settings_text(&self.path, text)?;
        let backup = self.backup()?;
        write_atomically(&self.path, text.as_bytes())?;
        Ok(backup)
    }

    /// Puts the backup back.
    ///
    /// # Errors
    /// [`Error::User`] when there is no backup; write errors.
    pub fn restore(&self) -> Result<()> {
        let backup = self.backup_path();
        let text = match std::fs::read(&backup) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::user(format!(
                    "no backup file found at {}",
                    backup.display()
                )));
            }
            Err(e) => return Err(Error::io("reading settings backup", &backup, e)),
        };
        write_atomically(&self.path, &text)
    }

    fn backup(&self) -> Result<Option<PathBuf>> {
        match std::fs::read(&self.path) {
            Ok(text) => {
                write_atomically(&self.backup_path(), &text)?;
                Ok(Some(self.backup_path()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading settings", &self.path, e)),
        }
    }

    fn write(&self, doc: &Mapping) -> Result<Option<PathBuf>> {
        let text = serde_yaml::to_string(doc)
            .map_err(|e| Error::io("writing settings", &self.path, std::io::Error::other(e)))?;
        // The writer does not reproduce every tag (`%` escapes come out unescaped): what would not
        // read back as `doc` is never written.
        if serde_yaml::from_str::<Mapping>(&text).ok().as_ref() != Some(doc) {
            return Err(Error::io(
                "writing settings",
                &self.path,
                std::io::Error::other(
                    "the settings hold a YAML tag or a key that broker cannot write back \
                     unchanged; change it by hand in the file",
                ),
            ));
        }
        let backup = self.backup()?;
        write_atomically(&self.path, text.as_bytes())?;
        Ok(backup)
    }
}

/// Makes sure `path` exists in `map`: existing keys are found in any case, missing ones are created
/// as the user wrote them (`TestProvider`, not `testprovider`), as mappings down to a null leaf.
fn create_path_as_written(map: &mut Mapping, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = existing_key_ci(map, first).unwrap_or_else(|| Value::String(first.clone()));
    if rest.is_empty() {
        map.entry(key).or_insert(Value::Null);
        return;
    }
    if let Some(child) = child_mapping(map, key) {
        create_path_as_written(child, rest);
    }
}

fn replace_path_ci(map: &mut Mapping, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = key_ci(map, first);
    if rest.is_empty() {
        map.insert(key, value);
    } else if let Some(Value::Mapping(child)) = map.get_mut(&key) {
        replace_path_ci(child, rest, value);
    }
}

/// Writes a file by temp file, fsync and rename next to it (through a symbolic link, keeping its mode).
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    crate::files::replace(path, contents, "writing")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `broker config restore` puts the file as it was before the last change back, and says
    /// plainly when there is no backup.
    #[test]
    fn restore_puts_the_backup_back_and_without_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile::in_directory(dir.path());
        let err = file.restore().unwrap_err();
        assert!(matches!(err, Error::User { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("no backup file found at {}", file.backup_path().display())
        );

        let before = "# mine\nthread_limit: 4\n";
        std::fs::write(file.path(), before).unwrap();
        let backup = file.set("thread_limit", Value::from(8)).unwrap();
        assert_eq!(backup, Some(file.backup_path()));
        assert_ne!(std::fs::read_to_string(file.path()).unwrap(), before);
        file.restore().unwrap();
        assert_eq!(std::fs::read_to_string(file.path()).unwrap(), before);

        // A backup that is there but cannot be read is that error, not "no backup".
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile::in_directory(dir.path());
        std::fs::create_dir(file.backup_path()).unwrap();
        let err = file.restore().unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("reading settings backup"), "{err}");

        // A settings file that is there but cannot be read is an error, not an empty file.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(SETTINGS_FILE)).unwrap();
        assert!(SettingsFile::in_directory(dir.path()).read().is_err());
    }
}
