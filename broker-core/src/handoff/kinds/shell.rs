//! Quoting for the shell scripts that kinds render from a target's configuration: a value becomes
//! one shell word, and nothing in it runs.

/// `value` as one POSIX shell word: between single quotes, each `'` in it written `'\''`. Inside
/// single quotes the shell expands nothing (`$`, backquotes, `\`, newlines stay as they are).
///
/// ```
/// use broker_core::handoff::kinds::shell::quote;
/// assert_eq!(quote("it's $(here)"), r"'it'\''s $(here)'");
/// ```
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh` makes of `word`: the one argument it becomes.
    fn as_sh_sees_it(word: &str) -> Vec<String> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {word}; do printf '%s\\0' \"$a\"; done"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn hostile_values_stay_one_word_and_run_nothing() {
        for value in [
            "",
            "plain",
            "it's",
            "''",
            "$(touch /tmp/broker-pwned) `id` ${HOME}",
            "a b\tc\nd",
            "\\'; echo pwned; '",
            "*",
        ] {
            assert_eq!(as_sh_sees_it(&quote(value)), [value], "{value:?}");
        }
    }
}
