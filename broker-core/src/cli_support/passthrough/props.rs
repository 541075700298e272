//! Properties of pass-through argument parsing: every form the Python broker accepts gives the
//! key and value written, the last of a repeated key wins in the first one's place, and no token
//! list makes the parser panic.

use proptest::prelude::*;

use super::*;

/// How one argument is written on the command line.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// `--key value`
    Spaced,
    /// `--key=value`
    Joined,
    /// `key=value`
    Bare,
}

/// Text that never names a data file (those are read instead: see `file_values_are_loaded`).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_-]{1,8}",
        Just("--flag".to_owned()),
        Just("a=b=c".to_owned()),
        Just(String::new()),
        any::<String>(),
    ]
    .prop_filter("not a data file name", |v| {
        let lower = v.to_ascii_lowercase();
        ![".json", ".yaml", ".yml"]
            .iter()
            .any(|ext| lower.ends_with(ext))
    })
}

fn argument() -> impl Strategy<Value = (Form, String, String)> {
    (
        prop::sample::select(vec![Form::Spaced, Form::Joined, Form::Bare]),
        prop_oneof!["[a-z][a-z_-]{0,8}", "-[a-z]{1,3}", any::<String>()],
        text(),
    )
        .prop_filter("a key has no `=` and is not empty", |(form, key, _)| {
            let bare_dashes = matches!(form, Form::Bare) && key.starts_with("--");
            !(key.is_empty() || key.contains('=') || bare_dashes)
        })
}

fn tokens_of(args: &[(Form, String, String)]) -> Vec<String> {
    let mut tokens = Vec::new();
    for (form, key, value) in args {
        match form {
            Form::Spaced => {
                tokens.push(format!("--{key}"));
                tokens.push(value.clone());
            }
            Form::Joined => tokens.push(format!("--{key}={value}")),
            Form::Bare => tokens.push(format!("{key}={value}")),
        }
    }
    tokens
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]

    #[test]
    fn every_form_gives_the_key_and_value_written_and_the_last_repeat_wins(
        args in prop::collection::vec(argument(), 0..6),
    ) {
        let mut model: Vec<(String, String)> = Vec::new();
        for (_, key, value) in &args {
            match model.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => model.push((key.clone(), value.clone())),
            }
        }
        let tokens = tokens_of(&args);
        let parsed = parse_passthrough(&tokens)
            .map_err(|e| TestCaseError::fail(format!("{tokens:?}: {e}")))?;
        let parsed: Vec<(String, String)> = parsed
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or("?").to_owned(), v.as_str().unwrap_or("?").to_owned()))
            .collect();
        prop_assert_eq!(parsed, model, "tokens {:?}", tokens);
    }

    #[test]
    fn any_tokens_parse_or_are_a_usage_error(
        tokens in prop::collection::vec(prop_oneof![text(), "--[a-z=]{0,4}", "[a-z=]{0,4}"], 0..6),
    ) {
        match parse_passthrough(&tokens) {
            Ok(args) => prop_assert!(args.len() <= tokens.len()),
            Err(Error::Usage { message }) => prop_assert!(!message.is_empty()),
            Err(other) => prop_assert!(false, "{tokens:?}: not a usage error: {other}"),
        }
    }
}
