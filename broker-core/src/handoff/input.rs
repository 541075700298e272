//! A target's configuration as a person gives it: `-c key=value` and `-c key=@file` on the command
//! line, a `--config-file` (a YAML or JSON mapping), or answers to the kind's questions, walked
//! through an [`Interaction`] as Razor's CLI did (description, example and default shown; `SKIP`
//! leaves an optional key out, `QUIT` gives up; secrets asked without echo; multi-line values until
//! a blank line). What comes out is checked by the kind's schema afterwards.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::handoff::schema::{KeySpec, KindSchema};
use crate::handoff::target::{ConfigValue, TargetConfig};
use crate::interaction::{Interaction, TextQuestion};

/// Values given as `key=value` or `key=@file` (the file's content; a trailing newline of a one-line
/// file is dropped, a multi-line file is taken as it is).
///
/// # Errors
/// [`Error::Usage`] for a token without `=` or with an empty key, and for a file that cannot be
/// read (naming the key and the file).
pub fn parse_assignments(tokens: &[String]) -> Result<BTreeMap<String, ConfigValue>> {
    let mut values = BTreeMap::new();
    for token in tokens {
        let Some((key, value)) = token.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            // Only what reads as a key is shown back: the rest may be a secret typed with the
            // wrong separator (`-c validation_key:…`).
            let key: String = token
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                .collect();
            return Err(Error::usage(format!(
                "`-c {key}…` is not KEY=VALUE or KEY=@FILE; write e.g. `-c server=puppet.example.com`"
            )));
        };
        let key = key.trim();
        let value = match value.strip_prefix('@') {
            Some(path) => read_value_file(Path::new(path)).map_err(|e| {
                Error::usage(format!(
                    "`-c {key}=@{path}`: cannot read `{path}` for key `{key}` ({e}); give a \
                     readable file or the value itself"
                ))
            })?,
            None => value.to_owned(),
        };
        values.insert(key.to_owned(), ConfigValue::Plain(value));
    }
    Ok(values)
}

fn read_value_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let text = crate::files::strip_bom(&text);
    Ok(match text.strip_suffix('\n') {
        Some(line) if !line.contains('\n') => line.to_owned(),
        _ => text.to_owned(),
    })
}

/// Values from a YAML or JSON file holding one mapping of keys to scalars.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Parse`] when it does not parse,
/// [`Error::User`] when it is not a mapping or a value is not a scalar (naming the key).
pub fn read_config_file(path: &Path) -> Result<BTreeMap<String, ConfigValue>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("reading the configuration file", path, e))?;
    let value: serde_yaml::Value = serde_yaml::from_str(crate::files::strip_bom(&text))
        .map_err(|e| Error::parse(path, &e, false))?;
    let map = match value {
        serde_yaml::Value::Mapping(map) => map,
        serde_yaml::Value::Null => return Ok(BTreeMap::new()),
        _ => {
            return Err(Error::user(format!(
                "`{}` must hold a mapping of configuration keys to values",
                path.display()
            )));
        }
    };
    let mut values = BTreeMap::new();
    for (key, value) in &map {
        let key = crate::value::scalar_text(key).unwrap_or_default();
        let text = match value {
            serde_yaml::Value::Null => String::new(),
            other => crate::value::scalar_text(other).ok_or_else(|| {
                Error::user(format!(
                    "key `{key}` in `{}` must have a text, number or boolean value",
                    path.display()
                ))
            })?,
        };
        values.insert(key, ConfigValue::Plain(text));
    }
    Ok(values)
}

/// Walks `kind`'s keys through `interaction`, starting from `current` (a target's configuration
/// when it is being changed: an empty answer keeps a key's value there). Returns the answers to
/// give [`KindSchema::validate`].
///
/// # Errors
/// [`Error::User`] when the person quits (`QUIT`) or nobody answers (end of input).
pub fn ask_config(
    kind: &KindSchema,
    interaction: &dyn Interaction,
    current: &TargetConfig,
) -> Result<BTreeMap<String, ConfigValue>> {
    let mut values = BTreeMap::new();
    for spec in kind.keys {
        if let Some(value) = ask_key(spec, interaction, current.get(spec.key))? {
            values.insert(spec.key.to_owned(), value);
        }
    }
    Ok(values)
}

/// One key: `None` leaves it out (its default, if any, then applies).
fn ask_key(
    spec: &KeySpec,
    interaction: &dyn Interaction,
    current: Option<&ConfigValue>,
) -> Result<Option<ConfigValue>> {
    let mut context = key_context(spec, current);
    let prompt = if spec.required {
        format!("{} (QUIT to cancel): ", spec.key)
    } else {
        format!("{} (SKIP to skip, QUIT to cancel): ", spec.key)
    };
    loop {
        let question = TextQuestion {
            context: &context,
            prompt: &prompt,
            secret: spec.secret,
            multiline: spec.multiline,
        };
        let answer = interaction.enter(&question).ok_or_else(|| {
            Error::user("no answer to the configuration questions; nothing was changed")
        })?;
        let problem = match answer.trim() {
            "QUIT" => return Err(Error::user("cancelled; nothing was changed")),
            "SKIP" if !spec.required => return Ok(None),
            "SKIP" => format!("`{}` cannot be skipped: a value is required", spec.key),
            "" if current.is_some() => return Ok(current.cloned()),
            "" if spec.default.is_some() || !spec.required => return Ok(None),
            "" => format!("`{}` needs a value", spec.key),
            _ => match spec.check(&answer) {
                Ok(()) => return Ok(Some(ConfigValue::new(&answer, spec.secret))),
                Err(e) => e.to_string(),
            },
        };
        context = format!("{problem}\n{}", key_context(spec, current));
    }
}

/// What is said before a key's prompt: its description, example, default or current value.
fn key_context(spec: &KeySpec, current: Option<&ConfigValue>) -> String {
    let mut out = spec.description.to_owned();
    if let Some(example) = spec.example {
        out.push_str(&format!(" (example: {example})"));
    }
    match (current, spec.default) {
        (Some(value), _) => out.push_str(&format!("\ncurrent: {}", value.shown())),
        (None, Some(default)) => out.push_str(&format!("\ndefault: {default:?}")),
        (None, None) => {}
    }
    if spec.multiline {
        out.push_str("\n(several lines; end with a blank line)");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::handoff::schema::{CHEF, PUPPET};

    /// Answers from a list, keeping what it was asked.
    struct Scripted {
        answers: Mutex<Vec<&'static str>>,
        asked: Mutex<Vec<(String, bool, bool)>>,
    }

    impl Scripted {
        fn new(answers: &[&'static str]) -> Self {
            Scripted {
                answers: Mutex::new(answers.iter().rev().copied().collect()),
                asked: Mutex::new(Vec::new()),
            }
        }
    }

    impl Interaction for Scripted {
        fn choose(&self, _: &crate::interaction::Question<'_>) -> Option<String> {
            None
        }
        fn enter(&self, q: &TextQuestion<'_>) -> Option<String> {
            self.asked.lock().unwrap().push((
                format!("{}|{}", q.context, q.prompt),
                q.secret,
                q.multiline,
            ));
            self.answers.lock().unwrap().pop().map(str::to_owned)
        }
    }

    #[test]
    fn assignments_take_values_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one");
        let pem = dir.path().join("key.pem");
        std::fs::write(&one, "puppet.example.com\n").unwrap();
        std::fs::write(&pem, "-----BEGIN-----\nabc\n-----END-----\n").unwrap();
        let values = parse_assignments(&[
            "a=b=c".into(),
            format!("server=@{}", one.display()),
            format!("validation_key=@{}", pem.display()),
            "empty=".into(),
        ])
        .unwrap();
        let text = |k: &str| values[k].expose().to_owned();
        assert_eq!(text("a"), "b=c");
        assert_eq!(text("server"), "puppet.example.com");
        assert_eq!(
            text("validation_key"),
            "-----BEGIN-----\nabc\n-----END-----\n"
        );
        assert_eq!(text("empty"), "");
        let err = parse_assignments(&["server".into()]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().starts_with("`-c server…` is not KEY=VALUE"));
        let err = parse_assignments(&["validation_key:TOPSECRET".into()]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`-c validation_key…` is not KEY=VALUE"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_value_file_is_a_usage_error_naming_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err =
            parse_assignments(&[format!("validation_key=@{}", missing.display())]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "`-c validation_key=@{0}`: cannot read `{0}` for key `validation_key` (No such \
                 file or directory (os error 2)); give a readable file or the value itself",
                missing.display()
            )
        );
    }

    #[test]
    fn a_config_file_is_a_mapping_of_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "server: p.example.com\nport: 8140\nempty:\n").unwrap();
        let values = read_config_file(&file).unwrap();
        assert_eq!(values["server"].expose(), "p.example.com");
        assert_eq!(values["port"].expose(), "8140");
        assert_eq!(values["empty"].expose(), "");
        std::fs::write(&file, "server: [a, b]\n").unwrap();
        assert!(
            read_config_file(&file)
                .unwrap_err()
                .to_string()
                .starts_with("key `server` in")
        );
        std::fs::write(&file, "- a\n").unwrap();
        assert!(read_config_file(&file).is_err());
    }

    #[test]
    fn the_walk_reasks_invalid_values_skips_optional_ones_and_keeps_defaults() {
        let asker = Scripted::new(&[
            "---invalid-hostname---",
            "p.example.com",
            "SKIP",
            "SKIP",
            "SKIP",
        ]);
        let values = ask_config(&PUPPET, &asker, &TargetConfig::default()).unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(values["server"].expose(), "p.example.com");
        let asked = asker.asked.lock().unwrap();
        assert_eq!(asked.len(), 5);
        assert!(asked[0].0.starts_with(
            "Host name of the Puppet server, also the CA server; empty for Puppet's default \
             (example: puppet.example.com)\ndefault: \"\"|server (SKIP to skip, QUIT to cancel): "
        ));
        assert!(asked[1].0.starts_with(
            "invalid value `---invalid-hostname---` for key `server`: expected a host name"
        ));
    }

    #[test]
    fn quit_and_no_answer_give_up_and_a_required_key_cannot_be_skipped() {
        let quit = ask_config(&PUPPET, &Scripted::new(&["QUIT"]), &TargetConfig::default());
        assert_eq!(
            quit.unwrap_err().to_string(),
            "cancelled; nothing was changed"
        );
        let none = ask_config(&PUPPET, &Scripted::new(&[]), &TargetConfig::default());
        assert!(none.unwrap_err().to_string().starts_with("no answer"));

        let asker = Scripted::new(&["SKIP", "https://c.example.com", "QUIT"]);
        assert!(ask_config(&CHEF, &asker, &TargetConfig::default()).is_err());
        let asked = asker.asked.lock().unwrap();
        assert!(
            asked[1]
                .0
                .starts_with("`chef_server_url` cannot be skipped")
        );
        assert!(asked[1].0.ends_with("chef_server_url (QUIT to cancel): "));

        // No answer to a required key without a default or a current value asks again.
        let asker = Scripted::new(&["", "QUIT"]);
        assert!(ask_config(&CHEF, &asker, &TargetConfig::default()).is_err());
        let asked = asker.asked.lock().unwrap();
        assert!(
            asked[1].0.starts_with("`chef_server_url` needs a value\n"),
            "{}",
            asked[1].0
        );
    }

    #[test]
    fn secrets_are_asked_without_echo_and_current_values_kept_on_an_empty_answer() {
        let mut current = TargetConfig::default();
        current.insert("validation_key", ConfigValue::new("OLD-KEY", true));
        let asker = Scripted::new(&["https://c.example.com", "18.2.7", "", "", "", "", "", ""]);
        let values = ask_config(&CHEF, &asker, &current).unwrap();
        assert_eq!(values["validation_key"].expose(), "OLD-KEY");
        assert!(values["validation_key"].is_secret());
        let asked = asker.asked.lock().unwrap();
        let (context, secret, multiline) = &asked[2];
        assert!(secret & multiline);
        assert!(!context.contains("OLD-KEY"), "{context}");
        assert!(context.contains("current: secret sha256:"), "{context}");
        assert!(!asked[0].1);
    }
}
