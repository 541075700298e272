//! The rare moments the library asks something on the terminal, and how a progress display stays out
//! of their way.
//!
//! A provider that must ask the user (AnsibleTower's `dangling_behavior: prompt`) holds a
//! [`QuestionGuard`] while it asks; a progress display (the CLI's spinner) checks [`asking`] and does
//! not draw over the question meanwhile. It asks only when [`answerable`] says someone can answer.
//!
//! ```
//! let question = broker_core::terminal::ask();
//! assert!(broker_core::terminal::asking());
//! drop(question);
//! assert!(!broker_core::terminal::asking());
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

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

static QUESTIONS: AtomicUsize = AtomicUsize::new(0);

/// Marks a question on the terminal as open until dropped.
#[derive(Debug)]
#[must_use = "the question counts as open only while the guard lives"]
pub struct QuestionGuard(());

impl Drop for QuestionGuard {
    fn drop(&mut self) {
        QUESTIONS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens a question: progress displays pause until the guard is dropped.
pub fn ask() -> QuestionGuard {
    QUESTIONS.fetch_add(1, Ordering::SeqCst);
    QuestionGuard(())
}

/// Whether some code is asking the user something right now.
pub fn asking() -> bool {
    QUESTIONS.load(Ordering::SeqCst) > 0
}
