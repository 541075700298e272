//! The rare moments the library asks something on the terminal, and how a progress display stays out
//! of their way.
//!
//! A provider that must ask the user (AnsibleTower's `dangling_behavior: prompt`) holds a
//! [`QuestionGuard`] while it asks; a progress display (the CLI's spinner) checks [`asking`] and does
//! not draw over the question meanwhile.
//!
//! ```
//! let question = broker_core::terminal::ask();
//! assert!(broker_core::terminal::asking());
//! drop(question);
//! assert!(!broker_core::terminal::asking());
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

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
