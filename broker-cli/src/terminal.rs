//! Questions on the terminal, for providers that must ask (AnsibleTower's `dangling_behavior: prompt`),
//! and how the progress display stays out of their way.
//!
//! [`Terminal`] is the [`Interaction`] the CLI gives its broker. While it asks, [`asking`] is true and
//! the spinner ([`crate::output::Progress`]) does not draw over the question. It asks only when
//! [`answerable`] says someone can answer.

use std::sync::atomic::{AtomicUsize, Ordering};

use broker_core::interaction::{Interaction, Question, TextQuestion};

/// Set by a `broker` that runs a checkout in a child process on a terminal's behalf (to its own pid),
/// in that child's environment: the supervisor shows the child's stderr on the terminal and passes
/// what the user types there to the child's stdin.
pub const SUPERVISED_ENV: &str = "BROKER_SUPERVISED";

/// Whether a question can be answered: `BROKER_NON_INTERACTIVE` is not set, and stdin is a terminal
/// or carries what the user types at one (the process runs for a supervising `broker`,
/// [`SUPERVISED_ENV`]; once the supervisor is gone, stdin is at its end and a question gets no answer).
pub fn answerable() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("BROKER_NON_INTERACTIVE").is_none()
        && (std::io::stdin().is_terminal() || std::env::var_os(SUPERVISED_ENV).is_some())
}

/// Questions open on the terminal now.
static QUESTIONS: AtomicUsize = AtomicUsize::new(0);

/// Marks a question on the terminal as open until dropped.
struct QuestionGuard(());

impl QuestionGuard {
    fn open() -> Self {
        QUESTIONS.fetch_add(1, Ordering::SeqCst);
        QuestionGuard(())
    }
}

impl Drop for QuestionGuard {
    fn drop(&mut self) {
        QUESTIONS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a question is open on the terminal right now.
pub fn asking() -> bool {
    QUESTIONS.load(Ordering::SeqCst) > 0
}

/// Asks on stderr and reads the answer from stdin, when [`answerable`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Terminal;

impl Interaction for Terminal {
    fn choose(&self, question: &Question<'_>) -> Option<String> {
        use std::io::{BufRead, Write};
        if !answerable() {
            return None;
        }
        let stdin = std::io::stdin();
        let _open = QuestionGuard::open();
        let mut err = std::io::stderr();
        // Start past the progress line, which pauses while the question is open.
        let _ = writeln!(err, "\r\x1b[2K\n{}", question.context);
        loop {
            let _ = write!(err, "{}", question.prompt);
            let _ = err.flush();
            let mut line = String::new();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let answer = line.trim();
            if question.answers.contains(&answer) {
                return Some(answer.to_owned());
            }
            let _ = writeln!(err, "{}", question.reminder());
        }
    }

    fn enter(&self, question: &TextQuestion<'_>) -> Option<String> {
        use std::io::Write;
        if !answerable() {
            return None;
        }
        let _open = QuestionGuard::open();
        // Echo goes off before the prompt shows, so nothing typed after it is echoed.
        let _quiet = question.secret.then(EchoOff::start);
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K\n{}\n{}", question.context, question.prompt);
        let _ = err.flush();
        let first = read_line().filter(|l| !(question.secret && l.contains(INTERRUPT)))?;
        if question.secret {
            // The Enter typed was not echoed either.
            let _ = writeln!(err);
        }
        let word = first.trim();
        if !question.multiline || word.is_empty() || word == "QUIT" || word == "SKIP" {
            return Some(first.trim_end_matches(['\r', '\n']).to_owned());
        }
        let mut text = first;
        while let Some(line) = read_line().filter(|l| !l.trim().is_empty()) {
            if question.secret && line.contains(INTERRUPT) {
                return None;
            }
            text.push_str(&line);
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Some(text)
    }
}

/// One line of stdin with its newline (`None` at the end of input).
fn read_line() -> Option<String> {
    use std::io::BufRead;
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

/// Ctrl-C as typed while [`EchoOff`] holds: a byte of the line, which then answers nothing.
const INTERRUPT: char = '\u{3}';

/// Typing is not echoed while this lives (stdin a terminal); dropping it puts echo back. Ctrl-C
/// sends no signal meanwhile (it is read as [`INTERRUPT`]): a signal would end the process before
/// the drop, leaving the terminal without echo.
struct EchoOff(Option<rustix::termios::Termios>);

impl EchoOff {
    fn start() -> Self {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(before) = tcgetattr(&stdin) else {
            return EchoOff(None);
        };
        let mut quiet = before.clone();
        quiet
            .local_modes
            .remove(LocalModes::ECHO | LocalModes::ISIG);
        match tcsetattr(&stdin, OptionalActions::Now, &quiet) {
            Ok(()) => EchoOff(Some(before)),
            Err(_) => EchoOff(None),
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                before,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_question_pauses_the_progress_display_until_it_closes() {
        assert!(!asking());
        let question = QuestionGuard::open();
        assert!(asking());
        drop(question);
        assert!(!asking());
    }
}
