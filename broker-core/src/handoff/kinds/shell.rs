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

/// The lines of a bootstrap script (a string literal, for `concat!`) that run the script again as
/// root through `sudo -n` when its user is not root, and else end it saying why. The script defines
/// `say` before them and is run as `sh SCRIPT`.
#[cfg(any(feature = "handoff-chef", feature = "handoff-puppet", test))]
macro_rules! become_root {
    () => {
        r#"if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo -n sh "$0"; fi
    say "not root and no sudo: hand off over a session as root, or give the user sudo"
    exit 1
fi
"#
    };
}
#[cfg(any(feature = "handoff-chef", feature = "handoff-puppet"))]
pub(crate) use become_root;

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

    /// `sh SCRIPT` of a script made of [`become_root!`] with `id -u` answering `uid`, and `sudo`
    /// (a stand-in printing its arguments) on the `PATH` or not: its exit status and output.
    fn become_root_as(uid: u32, with_sudo: bool) -> (i32, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let mut tools = vec![("id", format!("#!/bin/sh\necho {uid}\n"))];
        if with_sudo {
            tools.push(("sudo", "#!/bin/sh\necho \"sudo $*\"\n".to_owned()));
        }
        for (name, body) in tools {
            std::fs::write(bin.join(name), body).unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let script = dir.path().join("bootstrap.sh");
        let text = concat!(
            "say() { echo \"said: $*\"; }\n",
            become_root!(),
            "echo as root\n"
        );
        std::fs::write(&script, text).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg(&script)
            .env("PATH", &bin)
            .output()
            .unwrap();
        let shown = String::from_utf8(out.stdout)
            .unwrap()
            .replace(&script.display().to_string(), "SCRIPT");
        (out.status.code().unwrap(), shown)
    }

    #[test]
    fn become_root_runs_the_script_again_through_sudo_or_says_why_it_cannot() {
        assert_eq!(become_root_as(0, true), (0, "as root\n".to_owned()));
        assert_eq!(
            become_root_as(1000, true),
            (0, "sudo -n sh SCRIPT\n".to_owned())
        );
        assert_eq!(
            become_root_as(1000, false),
            (
                1,
                "said: not root and no sudo: hand off over a session as root, or give the user \
                 sudo\n"
                    .to_owned()
            )
        );
    }
}
