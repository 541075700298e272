//! Questions on the terminal, for providers that must ask (AnsibleTower's `dangling_behavior: prompt`),
//! and how the progress display stays out of their way.
//!
//! [`Terminal`] is the [`Interaction`] the CLI gives its broker. While it asks, [`asking`] is true and
//! the spinner ([`crate::output::Progress`]) does not draw over the question. It asks only when
//! [`answerable`] says someone can answer.

use std::sync::atomic::{AtomicUsize, Ordering};

use broker_core::interaction::{Interaction, Question};

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
