//! The scenarios directory (`<broker directory>/scenarios`): finding a scenario by name or path,
//! listing (and filtering by metadata), validating, migrating a file to the newest spec version, and
//! importing files into it.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::spec;
use super::{Scenario, scenario_error};
use crate::error::{Error, Result};
use crate::settings::Settings;

/// The scenarios directory.
pub fn directory(settings: &Settings) -> PathBuf {
    settings.directory().join("scenarios")
}

/// The scenario file `name_or_path` names: an existing file, that path with `.yaml`, a path inside
/// the scenarios directory (with or without `.yaml`/`.yml`), or a unique stem anywhere under it.
///
/// # Errors
/// [`Error::Scenario`] when nothing matches, or several files do (naming them).
pub fn find(settings: &Settings, name_or_path: &str) -> Result<PathBuf> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        return Ok(path.to_owned());
    }
    if path.extension().is_none() && path.with_extension("yaml").is_file() {
        return Ok(path.with_extension("yaml"));
    }
    let dir = directory(settings);
    for ext in [".yaml", ".yml", ""] {
        let candidate = dir.join(format!("{name_or_path}{ext}"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let wanted = name_or_path
        .strip_suffix(".yaml")
        .or_else(|| name_or_path.strip_suffix(".yml"))
        .unwrap_or(name_or_path);
    let matches: Vec<String> = list(settings)?
        .into_iter()
        .filter(|rel| rel == wanted || rel.rsplit('/').next() == Some(stem.as_str()))
        .collect();
    match matches.as_slice() {
        [one] => find(settings, one),
        [] => Err(scenario_error(
            name_or_path,
            format!(
                "no such scenario: not a file, nor a scenario in `{}`; `broker scenarios list` \
                 shows them",
                dir.display()
            ),
        )),
        many => Err(scenario_error(
            name_or_path,
            format!(
                "the name is ambiguous: {}; name one by its path under the scenarios directory",
                many.join(", ")
            ),
        )),
    }
}

/// The scenarios in the directory, as paths under it without their extension (`a/b/name`), sorted.
///
/// # Errors
/// A directory that cannot be read.
pub fn list(settings: &Settings) -> Result<Vec<String>> {
    let dir = directory(settings);
    let mut out = Vec::new();
    if dir.is_dir() {
        collect(&dir, &dir, &mut out)?;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io("reading the scenarios directory", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if path.is_dir() && !hidden {
            collect(root, &path, out)?;
        } else if !hidden
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
            && let Ok(relative) = path.with_extension("").strip_prefix(root)
        {
            out.push(relative.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The listed scenarios whose metadata `filter` (over `@res`) keeps; `tag` is short for
/// `"TAG" in @res.tags`. Files that do not read as YAML mappings are left out.
///
/// # Errors
/// A filter that does not parse; a directory that cannot be read.
pub fn list_filtered(
    settings: &Settings,
    filter: Option<&str>,
    tag: Option<&str>,
) -> Result<Vec<String>> {
    let tag_filter = tag.map(|t| format!("{:?} in @res.tags", t));
    let Some(filter) = tag_filter.as_deref().or(filter) else {
        return list(settings);
    };
    let filter = crate::filter::Filter::parse(filter, "res")?;
    let mut kept = Vec::new();
    for name in list(settings)? {
        let Ok(path) = find(settings, &name) else {
            continue;
        };
        let doc = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_yaml::from_str::<Value>(&t).ok());
        if let Some(Value::Mapping(doc)) = doc
            && !filter
                .select(&[Value::Mapping(super::metadata(&doc))])
                .is_empty()
        {
            kept.push(name);
        }
    }
    Ok(kept)
}

/// Checks a scenario file: `None` when valid, else what is wrong.
///
/// # Errors
/// Never for an invalid file (that is the answer); only when there is no file to read.
pub fn validate(path: &Path) -> Result<Option<String>> {
    match Scenario::load(path) {
        Ok(_) => Ok(None),
        Err(Error::Scenario {
            message, source, ..
        }) => Ok(Some(match source {
            Some(cause) => format!("{message}: {cause}"),
            None => message,
        })),
        Err(other) => Err(other),
    }
}

/// What [`migrate`] did or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// The file's spec version before.
    pub from: u64,
    /// The version it is (or would be) brought to.
    pub to: u64,
    /// Whether the file was changed.
    pub migrated: bool,
    /// The copy of the file as it was (`<file>.bak`), when it was changed.
    pub backup: Option<PathBuf>,
}

/// Brings a scenario file to spec version `to` (default: the newest), changing only its
/// `_spec_ver` line (comments and layout stay); the file as it was goes to `<file>.bak`. With
/// `dry_run`, only says what it would do. Versions 2 and 3 only add features, so no step changes.
///
/// # Errors
/// [`Error::Scenario`] when the file is not a scenario, `to` is not a spec version, or the migrated
/// file would not be valid (the file is then left as it was).
pub fn migrate(path: &Path, to: Option<u64>, dry_run: bool) -> Result<Migration> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("reading the scenario to migrate", path, e))?;
    let doc: Mapping = serde_yaml::from_str(&text)
        .map_err(|e| scenario_error(&name, "the file is not a YAML mapping").caused_by(e))?;
    let from = spec::spec_version(&doc).map_err(|e| scenario_error(&name, e))?;
    let to = to.unwrap_or(spec::CURRENT_SPEC_VERSION);
    if !spec::SPEC_VERSIONS.contains(&to) {
        return Err(scenario_error(
            &name,
            format!("there is no spec version {to}; versions are 1, 2 and 3"),
        ));
    }
    let mut plan = Migration {
        from,
        to,
        migrated: false,
        backup: None,
    };
    if from == to || dry_run {
        return Ok(plan);
    }
    let migrated = with_spec_version(&text, to);
    Scenario::from_yaml(&name, &migrated)
        .map_err(|e| scenario_error(&name, "the migrated file would not be valid").caused_by(e))?;
    let backup = path.with_file_name(format!(
        "{}.bak",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    crate::files::replace(&backup, text.as_bytes(), "writing the scenario's backup")?;
    crate::files::replace(path, migrated.as_bytes(), "writing the migrated scenario")?;
    plan.migrated = true;
    plan.backup = Some(backup);
    Ok(plan)
}

/// `text` with its top-level `_spec_ver:` line set to `version` (added first when it has none).
fn with_spec_version(text: &str, version: u64) -> String {
    let line = format!("_spec_ver: {version}");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.starts_with("_spec_ver:") {
                found = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.insert(0, line);
    }
    let mut joined = out.join("\n");
    joined.push('\n');
    joined
}

/// The URL of the raw file behind a GitHub or GitLab page URL (`…/blob/REF/PATH`, `…/-/blob/REF/PATH`);
/// any other URL as it is.
pub fn raw_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://github.com/")
        && let [owner, repo, "blob", tail] = rest.splitn(4, '/').collect::<Vec<_>>()[..]
    {
        return format!("https://raw.githubusercontent.com/{owner}/{repo}/{tail}");
    }
    if let Some((project, tail)) = url.split_once("/-/blob/") {
        return format!("{project}/-/raw/{tail}");
    }
    url.to_owned()
}

/// Imports a scenario (its text, from a file or a URL) into the scenarios directory as
/// `<name>.yaml`, refusing to replace a different existing file unless `force`. A file that does
/// not follow the format is imported all the same, and what is wrong is returned with it.
///
/// # Errors
/// [`Error::User`] for an existing different file without `force`, a name that is not a plain file
/// name; file errors.
pub fn import(
    settings: &Settings,
    name: &str,
    text: &str,
    force: bool,
) -> Result<(PathBuf, Option<String>)> {
    let stem = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
        .unwrap_or(name);
    if stem.is_empty() || stem.contains(['/', '\\']) || stem.starts_with('.') {
        return Err(Error::user(format!(
            "`{name}` is not a scenario file name; give one with `--name`"
        )));
    }
    let dir = directory(settings);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io("creating the scenarios directory", &dir, e))?;
    let path = dir.join(format!("{stem}.yaml"));
    if let Ok(existing) = std::fs::read_to_string(&path)
        && existing != text
        && !force
    {
        return Err(Error::user(format!(
            "`{}` exists and differs; import with `--force` to replace it",
            path.display()
        )));
    }
    let problems = Scenario::from_yaml(stem, text)
        .err()
        .map(|e| crate::error::chain(&e));
    crate::files::replace(&path, text.as_bytes(), "writing the imported scenario")?;
    Ok((path, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings::from_yaml(dir, "").unwrap()
    }

    fn put(dir: &Path, rel: &str, text: &str) {
        let path = dir.join("scenarios").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn scenarios_are_found_by_path_name_or_unique_stem() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        put(dir.path(), "a.yaml", "steps: []\n");
        put(dir.path(), "team/deploy.yml", "tags: [x]\nsteps: []\n");
        put(dir.path(), "team/a.yaml", "steps: []\n");
        put(dir.path(), ".hidden.yaml", "steps: []\n");
        assert_eq!(list(&s).unwrap(), ["a", "team/a", "team/deploy"]);
        let root = dir.path().join("scenarios");
        assert_eq!(
            find(&s, "team/deploy").unwrap(),
            root.join("team/deploy.yml")
        );
        assert_eq!(find(&s, "deploy").unwrap(), root.join("team/deploy.yml"));
        assert_eq!(find(&s, "a").unwrap(), root.join("a.yaml"));
        let e = crate::error::chain(&find(&s, "nothing").unwrap_err());
        assert!(e.contains("no such scenario"), "{e}");
        put(dir.path(), "other/deploy.yaml", "steps: []\n");
        let e = crate::error::chain(&find(&s, "deploy").unwrap_err());
        assert!(e.contains("other/deploy, team/deploy"), "{e}");
        assert_eq!(list_filtered(&s, None, Some("x")).unwrap(), ["team/deploy"]);
        assert_eq!(
            list_filtered(&s, Some("@res.tags is None"), None).unwrap(),
            ["a", "other/deploy", "team/a"]
        );
    }

    #[test]
    fn migration_sets_only_the_version_line_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        let text = "# keep me\nsteps: []  # and me\n";
        std::fs::write(&path, text).unwrap();
        let dry = migrate(&path, None, true).unwrap();
        assert_eq!((dry.from, dry.to, dry.migrated), (1, 3, false));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let done = migrate(&path, Some(2), false).unwrap();
        assert!(done.migrated);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("_spec_ver: 2\n{text}")
        );
        assert_eq!(std::fs::read_to_string(done.backup.unwrap()).unwrap(), text);
        migrate(&path, None, false).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("_spec_ver: 3\n# keep me")
        );
        assert!(!migrate(&path, None, false).unwrap().migrated);
        assert!(migrate(&path, Some(7), false).is_err());
    }

    #[test]
    fn page_urls_become_raw_file_urls() {
        assert_eq!(
            raw_url("https://github.com/o/r/blob/main/dir/s.yaml"),
            "https://raw.githubusercontent.com/o/r/main/dir/s.yaml"
        );
        assert_eq!(
            raw_url("https://gitlab.example.com/g/p/-/blob/v1/s.yaml"),
            "https://gitlab.example.com/g/p/-/raw/v1/s.yaml"
        );
        assert_eq!(raw_url("http://h/s.yaml"), "http://h/s.yaml");
    }

    #[test]
    fn imports_refuse_to_replace_a_different_file_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let (path, problems) = import(&s, "mine.yaml", "steps: []\n", false).unwrap();
        assert_eq!(path, dir.path().join("scenarios/mine.yaml"));
        assert_eq!(problems, None);
        assert!(import(&s, "mine", "steps: []\n", false).is_ok());
        assert!(import(&s, "mine", "steps: [x]\n", false).is_err());
        let (_, problems) = import(&s, "mine", "steps: [x]\n", true).unwrap();
        assert!(problems.unwrap().contains("scenario format"));
        assert!(import(&s, "../evil", "steps: []\n", true).is_err());
    }
}
