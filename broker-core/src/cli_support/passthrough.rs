//! Pass-through arguments and data files, as the `broker` command line reads them: `--key value`,
//! `--key=value` and `key=value` tokens, `--args-file`, values that name JSON or YAML files, and
//! values for `broker config set`.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

/// Turns pass-through command-line tokens into arguments, as the Python broker does:
/// `--key value`, `--key=value` (split at the first `=`), and bare `key=value`. After a bare `--key`
/// the next token is its value even when it contains `=`. Keys keep their spelling. A value naming an
/// existing `.json`, `.yaml` or `.yml` file is replaced by the file's content (the Python broker's
/// rule, see [`names_data_file`]); no other value is ever read from a file.
///
/// # Errors
/// [`Error::Usage`] for a `--key` with no value, or a token that is neither a key nor a `key=value`
/// pair; the errors of [`load_data_file`] for file values.
pub fn parse_passthrough(tokens: &[String]) -> Result<Mapping> {
    let mut args = Mapping::new();
    let mut iter = tokens.iter().peekable();
    while let Some(token) = iter.next() {
        let (key, value) = if let Some(flag) = token.strip_prefix("--") {
            match flag.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => match iter.next() {
                    Some(v) => (flag.to_owned(), v.clone()),
                    None => {
                        return Err(Error::usage(format!(
                            "`--{flag}` needs a value (`--{flag} VALUE`); switches are not provider arguments"
                        )));
                    }
                },
            }
        } else if let Some((k, v)) = token.split_once('=') {
            (k.to_owned(), v.to_owned())
        } else {
            return Err(Error::usage(format!(
                "unexpected argument `{token}`; provider arguments are `--key value`, `--key=value` or `key=value`"
            )));
        };
        if key.is_empty() {
            return Err(Error::usage(format!("argument `{token}` has an empty key")));
        }
        args.insert(Value::String(key), resolve_file_value(value)?);
    }
    Ok(args)
}

/// A value that names an existing data file becomes the file's content; anything else stays text.
fn resolve_file_value(value: String) -> Result<Value> {
    if names_data_file(&value) {
        tracing::info!("reading the value from the file `{value}`");
        return load_data_file(Path::new(&value));
    }
    Ok(Value::String(value))
}

/// Whether a value stands for a data file's content, as in the Python broker: its name ends in
/// `.json`, `.yaml` or `.yml` (any case) and a regular file of that name exists. A value like `root`
/// is text even when a file `root` exists.
pub fn names_data_file(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    [".json", ".yaml", ".yml"]
        .iter()
        .any(|ext| lower.ends_with(ext))
        && Path::new(value).is_file()
}

/// A value for `broker config set`, and the file it was read from:
/// - `@FILE`: FILE's content, parsed as JSON or YAML (any name; an error when it cannot be read);
/// - a name of an existing `.json`, `.yaml` or `.yml` file: its content (the Python broker's rule);
/// - anything else: the text parsed as a YAML value (`4` is a number, `[a, b]` a list), or the text
///   as it is when it does not parse. No other value reads a file: `root` stays `root` even when
///   a file `root` exists. To store text starting with `@`, quote it (`'"@x"'`).
///
/// # Errors
/// As [`load_data_file`] for `@FILE` and data file names; [`Error::Usage`] for a bare `@`.
pub fn setting_value(text: &str) -> Result<(Value, Option<PathBuf>)> {
    if let Some(file) = text.strip_prefix('@') {
        if file.is_empty() {
            return Err(Error::usage(
                "`@` needs a file name (`@settings-part.yaml`); to store text starting with `@`, \
                 quote it: '\"@…\"'",
            ));
        }
        let path = PathBuf::from(file);
        return Ok((load_data_file(&path)?, Some(path)));
    }
    if names_data_file(text) {
        let path = PathBuf::from(text);
        return Ok((load_data_file(&path)?, Some(path)));
    }
    let value = serde_yaml::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    Ok((value, None))
}

/// Loads a JSON or YAML file.
///
/// # Errors
/// [`Error::Io`] when it cannot be read, [`Error::Parse`] naming line and column when it does not parse.
pub fn load_data_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    parse_data_text(path, &text)
}

/// Parses JSON or YAML text read from `path`.
///
/// # Errors
/// [`Error::Parse`] naming line and column.
pub fn parse_data_text(path: &Path, text: &str) -> Result<Value> {
    // YAML is a superset of JSON, so one parser serves both.
    serde_yaml::from_str(crate::files::strip_bom(text)).map_err(|e| Error::parse(path, &e, false))
}

/// Loads an `--args-file`: a mapping, or a list of mappings merged in order.
///
/// # Errors
/// As [`load_data_file`], and [`Error::Usage`] when the file holds something else.
pub fn load_args_file(path: &Path) -> Result<Mapping> {
    match load_data_file(path)? {
        Value::Mapping(m) => Ok(m),
        Value::Sequence(items) => {
            let mut out = Mapping::new();
            for item in items {
                match item {
                    Value::Mapping(m) => out.extend(m),
                    _ => return Err(not_args(path)),
                }
            }
            Ok(out)
        }
        Value::Null => Ok(Mapping::new()),
        _ => Err(not_args(path)),
    }
}

fn not_args(path: &Path) -> Error {
    Error::usage(format!(
        "args file `{}` must hold a mapping of arguments (or a list of mappings)",
        path.display()
    ))
}

/// Renames `container-host` to `container_host` for the keys providers declare (their action keys), as
/// the Python broker's declared options (`--container-host`, `--tower-inventory`) did; other keys keep
/// their spelling.
pub fn normalize_declared(args: Mapping, declared: &[&str]) -> Mapping {
    args.into_iter()
        .map(|(k, v)| match k {
            Value::String(key)
                if key.contains('-') && declared.contains(&key.replace('-', "_").as_str()) =>
            {
                (Value::String(key.replace('-', "_")), v)
            }
            other => (other, v),
        })
        .collect()
}

/// The arguments of `broker extend`: the pass-through tokens as [`parse_passthrough`] reads them, with
/// dashes in every key standing for underscores (providers declare their extend options, such as
/// `new_expire_time`, with underscores and the command line spells them `--new-expire-time`), and the
/// `-l/--provider-labels` text (`k=v,…`), when given, as `provider_labels`.
///
/// # Errors
/// As [`parse_passthrough`].
pub fn extend_arguments(tokens: &[String], labels: Option<&str>) -> Result<Mapping> {
    let mut args: Mapping = parse_passthrough(tokens)?
        .into_iter()
        .map(|(k, v)| match k {
            Value::String(s) => (Value::String(s.replace('-', "_")), v),
            other => (other, v),
        })
        .collect();
    if let Some(labels) = labels {
        args.insert(
            "provider_labels".into(),
            Value::Mapping(crate::args::parse_labels(labels)),
        );
    }
    Ok(args)
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn passthrough_forms_match_upstream() {
        let args = parse_passthrough(&toks(&[
            "--workflow",
            "deploy-rhel",
            "--deploy_rhel_version=9.4",
            "naked=yes",
            "--extra",
            "a=b=c",
            "--url=http://x/?q=1",
        ]))
        .unwrap();
        let get = |k: &str| args.get(k).and_then(Value::as_str).unwrap().to_owned();
        assert_eq!(get("workflow"), "deploy-rhel");
        assert_eq!(get("deploy_rhel_version"), "9.4");
        assert_eq!(get("naked"), "yes");
        assert_eq!(get("extra"), "a=b=c");
        assert_eq!(get("url"), "http://x/?q=1");
    }

    #[test]
    fn extend_arguments_spell_every_key_with_underscores_and_take_the_labels() {
        let args = extend_arguments(
            &toks(&["--new-expire-time", "2h", "some-key=a-b", "--x_y=1"]),
            Some("team=qa, bare"),
        )
        .unwrap();
        let expected: Value = serde_yaml::from_str(
            "{new_expire_time: 2h, some_key: a-b, x_y: '1', provider_labels: {team: qa, bare: ''}}",
        )
        .unwrap();
        assert_eq!(Value::Mapping(args), expected);
        let args = extend_arguments(&[], None).unwrap();
        assert!(args.is_empty());
        assert!(extend_arguments(&toks(&["--new-expire-time"]), None).is_err());
    }

    #[test]
    fn a_byte_order_mark_at_the_start_of_an_args_file_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("args.yaml");
        std::fs::write(&path, "\u{feff}workflow: deploy-rhel\ncount: 2\n").unwrap();
        let args = load_args_file(&path).unwrap();
        assert_eq!(
            args.get("workflow").and_then(Value::as_str),
            Some("deploy-rhel")
        );
        assert_eq!(args.get("count").and_then(Value::as_u64), Some(2));
        assert_eq!(args.len(), 2);
    }

    #[test]
    fn trailing_switch_is_a_usage_error() {
        let err = parse_passthrough(&toks(&["--flag"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(parse_passthrough(&toks(&["stray"])).is_err());
    }

    #[test]
    fn file_values_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("extra.yaml");
        std::fs::write(&file, "a: 1\nb: [x, y]\n").unwrap();
        let args = parse_passthrough(&["--extra".into(), file.display().to_string()]).unwrap();
        assert_eq!(
            args.get("extra").unwrap().get("a").and_then(Value::as_u64),
            Some(1)
        );
    }

    #[test]
    fn declared_options_lose_their_dashes() {
        let args =
            parse_passthrough(&toks(&["--container-host", "fedora", "--my-arg", "x"])).unwrap();
        let args = normalize_declared(args, &["container_host"]);
        assert!(args.contains_key("container_host"));
        assert!(args.contains_key("my-arg"));
    }

    #[test]
    fn args_file_list_is_merged() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("args.json");
        std::fs::write(&file, r#"[{"a": 1, "b": 2}, {"b": 3}]"#).unwrap();
        let args = load_args_file(&file).unwrap();
        assert_eq!(args.get("b").and_then(Value::as_u64), Some(3));
    }

    #[test]
    fn an_empty_args_file_gives_no_arguments_and_other_shapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("args.yaml");
        std::fs::write(&file, "# nothing yet\n").unwrap();
        assert_eq!(load_args_file(&file).unwrap(), Mapping::new());
        for text in ["just text\n", "- a: 1\n- [b]\n"] {
            std::fs::write(&file, text).unwrap();
            let err = load_args_file(&file).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{text}");
            assert!(
                err.to_string().contains("must hold a mapping of arguments"),
                "{err}"
            );
        }
    }

    #[test]
    fn deeply_nested_data_files_are_a_parse_error_not_a_stack_overflow() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            (
                "deep.yaml",
                format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
            ),
            (
                "deep.json",
                format!("{}1{}", "{\"a\": ".repeat(10_000), "}".repeat(10_000)),
            ),
            (
                "deep-block.yaml",
                (0..1_000)
                    .map(|i| format!("{}- \n", " ".repeat(i)))
                    .collect(),
            ),
        ] {
            let file = dir.path().join(name);
            std::fs::write(&file, text).unwrap();
            let err = load_data_file(&file).unwrap_err();
            assert!(
                matches!(err, Error::Parse { .. }) && err.to_string().contains("recursion"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn only_at_file_and_data_file_names_read_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::write(&root, "contents of a file named root\n").unwrap();
        let part = dir.path().join("part.yaml");
        std::fs::write(&part, "a: 1\n").unwrap();
        let text = |p: &Path| p.display().to_string();

        let (value, from) = setting_value(&text(&root)).unwrap();
        assert_eq!(value, Value::from(text(&root)), "a plain name is text");
        assert_eq!(from, None);
        let (value, from) = setting_value(&format!("@{}", text(&root))).unwrap();
        assert_eq!(value, Value::from("contents of a file named root"));
        assert_eq!(from.as_deref(), Some(root.as_path()));
        let (value, from) = setting_value(&text(&part)).unwrap();
        assert_eq!(
            value.get("a").and_then(Value::as_u64),
            Some(1),
            "as upstream"
        );
        assert_eq!(from.as_deref(), Some(part.as_path()));
        assert_eq!(setting_value("4").unwrap().0, Value::from(4));
        assert_eq!(setting_value("root").unwrap().0, Value::from("root"));
        assert_eq!(
            setting_value("gone.yaml").unwrap().0,
            Value::from("gone.yaml")
        );
        assert_eq!(setting_value("@").unwrap_err().exit_code(), 2);
        let missing = setting_value(&format!("@{}", text(&dir.path().join("gone")))).unwrap_err();
        assert!(missing.to_string().contains("gone"), "{missing}");

        let args =
            parse_passthrough(&["--user".into(), text(&root), "--extra".into(), text(&part)])
                .unwrap();
        assert_eq!(args.get("user"), Some(&Value::from(text(&root))));
        assert!(args.get("extra").is_some_and(Value::is_mapping));
    }
}
