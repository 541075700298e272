//! Shell completions and man pages, generated from the clap definition in `cli.rs` — the one source
//! of the verbs and flags, so these never drift from `--help`. Nothing here reads settings or the
//! inventory.

use std::path::Path;

use broker_core::{Error, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The command line, with the version the man pages show.
fn command() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "broker", &mut script);
    script
}

/// The man page `broker(1)`: the global flags and a section listing every verb.
///
/// # Errors
/// Only when the page cannot be rendered into memory (never in practice).
pub fn manpage() -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command())
        .render(&mut page)
        .map_err(|e| Error::io_without_path("rendering the man page", e))?;
    Ok(page)
}

/// Writes `broker.1` and one `broker-VERB.1` per verb (with its flags) into `dir`, creating it.
///
/// # Errors
/// When `dir` cannot be created or a page cannot be written there.
pub fn write_manpages(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io("creating the man page directory", dir, e))?;
    clap_mangen::generate_to(command(), dir).map_err(|e| Error::io("writing man pages", dir, e))?;
    let mut written: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("listing the man page directory", dir, e))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("broker") && name.ends_with(".1"))
        .collect();
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verbs a user sees in `broker --help`.
    fn verbs() -> Vec<String> {
        let verbs: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_owned())
            .collect();
        assert!(
            verbs.len() >= 10,
            "the command line lost its verbs: {verbs:?}"
        );
        verbs
    }

    #[test]
    fn completions_of_every_shell_offer_every_verb() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            for verb in verbs() {
                assert!(script.contains(&verb), "{shell} completions lack `{verb}`");
            }
            // Flags of the verbs too (fish spells them without the dashes).
            assert!(
                script.contains("keep-partial") && script.contains("results-filter"),
                "{shell} completions lack the verbs' flags"
            );
        }
    }

    #[test]
    fn the_man_page_lists_every_verb() {
        let page = String::from_utf8(manpage().unwrap()).unwrap();
        assert!(
            page.starts_with(".ie \\n(.g .ds Aq \\(aq"),
            "not roff: {page:.80}"
        );
        assert!(page.contains(&format!(
            ".TH broker 1  \"broker {}\"",
            env!("CARGO_PKG_VERSION")
        )));
        for verb in verbs() {
            assert!(
                page.contains(&format!("broker\\-{verb}(1)")),
                "the man page does not list `{verb}`"
            );
        }
        assert!(page.contains("\\-\\-output\\-file"));
    }

    #[test]
    fn one_man_page_per_verb_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_manpages(&dir.path().join("man1")).unwrap();
        let mut expected: Vec<String> = verbs()
            .iter()
            .map(|v| format!("broker-{v}.1"))
            .chain(["broker.1".to_owned()])
            .collect();
        // `config`, `target`, `handoff`, `db` and `scenarios` have verbs of their own, each with
        // its page.
        let command = Cli::command();
        for verb in ["config", "target", "handoff", "db", "scenarios"] {
            expected.extend(
                command
                    .find_subcommand(verb)
                    .unwrap()
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set())
                    .map(|c| format!("broker-{verb}-{}.1", c.get_name())),
            );
        }
        // `serve token` has verbs of its own, each with its page.
        #[cfg(feature = "serve")]
        {
            let token = command
                .find_subcommand("serve")
                .and_then(|serve| serve.find_subcommand("token"))
                .unwrap();
            expected.push("broker-serve-token.1".to_owned());
            expected.extend(
                token
                    .get_subcommands()
                    .map(|c| format!("broker-serve-token-{}.1", c.get_name())),
            );
        }
        expected.sort();
        assert_eq!(written, expected);
        let checkout = std::fs::read_to_string(dir.path().join("man1/broker-checkout.1")).unwrap();
        assert!(checkout.contains("\\-\\-keep\\-partial"));
    }
}
