//! How a provider asks the person running broker something, through an interface the caller supplies.
//!
//! Providers never touch a terminal: one that must ask (AnsibleTower's `dangling_behavior: prompt`)
//! puts a [`Question`] to the [`Interaction`] its [`ProviderConfig`](crate::ProviderConfig) carries.
//! A library caller gets [`NonInteractive`], which answers nothing, so the provider takes its
//! non-interactive course; the CLI sets one that asks on the terminal
//! ([`Broker::set_interaction`](crate::Broker::set_interaction)).
//!
//! ```
//! use broker_core::interaction::{Interaction, NonInteractive, Question};
//!
//! let question = Question {
//!     context: "The failed workflow left host `vm1`.",
//!     prompt: "Check it in (c) or store it (s)? [c/s]: ",
//!     answers: &["c", "s"],
//! };
//! assert_eq!(NonInteractive.choose(&question), None);
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

/// A question with a fixed set of answers.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// What the question is about, shown once before it (may span lines).
    pub context: &'a str,
    /// The question itself, asked again after an answer that is not one of `answers`.
    pub prompt: &'a str,
    /// The answers accepted, exactly as typed.
    pub answers: &'a [&'a str],
}

impl Question<'_> {
    /// What to say after an answer that is not one of [`Question::answers`]: "Please answer c, s, cA
    /// or sA."
    pub fn reminder(&self) -> String {
        let answers = match self.answers {
            [] => String::new(),
            [one] => (*one).to_owned(),
            [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        };
        format!("Please answer {answers}.")
    }
}

/// Puts questions to whoever runs broker.
pub trait Interaction: Send + Sync {
    /// Asks `question` and waits for one of its answers; `None` when nobody can answer. It may
    /// block for as long as the person takes: call it from a blocking task
    /// (`tokio::task::spawn_blocking`).
    fn choose(&self, question: &Question<'_>) -> Option<String>;

    /// Asks for a line of text (or, when [`TextQuestion::multiline`], lines until a blank one,
    /// each ending in a newline) and waits for it; `None` when nobody can answer. A
    /// [`TextQuestion::secret`] answer is read without echo. The default answers nothing.
    fn enter(&self, question: &TextQuestion<'_>) -> Option<String> {
        let _ = question;
        None
    }
}

/// A question answered with text: a value of a handoff target's configuration.
#[derive(Debug, Clone, Copy)]
pub struct TextQuestion<'a> {
    /// What is asked for, shown once before it (may span lines).
    pub context: &'a str,
    /// The prompt the answer is typed after.
    pub prompt: &'a str,
    /// Whether the answer is a secret: not echoed, never shown back.
    pub secret: bool,
    /// Whether the answer spans lines, ended by a blank line.
    pub multiline: bool,
}

/// The default: nobody is asked, every question goes unanswered.
#[derive(Debug, Default, Clone, Copy)]
pub struct NonInteractive;

impl Interaction for NonInteractive {
    fn choose(&self, _question: &Question<'_>) -> Option<String> {
        None
    }
}

/// The interaction a broker's providers ask through, shared with every provider it built, so that a
/// later [`Broker::set_interaction`](crate::Broker::set_interaction) reaches them too.
#[derive(Clone)]
pub(crate) struct Asker(Arc<Mutex<Arc<dyn Interaction>>>);

impl Default for Asker {
    fn default() -> Self {
        Asker(Arc::new(Mutex::new(Arc::new(NonInteractive))))
    }
}

impl fmt::Debug for Asker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Asker")
    }
}

impl Asker {
    pub(crate) fn set(&self, interaction: Arc<dyn Interaction>) {
        *crate::sync::lock(&self.0) = interaction;
    }

    pub(crate) fn get(&self) -> Arc<dyn Interaction> {
        Arc::clone(&crate::sync::lock(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reminder_lists_the_answers() {
        let ask = |answers: &'static [&'static str]| Question {
            context: "",
            prompt: "",
            answers,
        };
        assert_eq!(
            ask(&["c", "s", "cA", "sA"]).reminder(),
            "Please answer c, s, cA or sA."
        );
        assert_eq!(ask(&["y", "n"]).reminder(), "Please answer y or n.");
        assert_eq!(ask(&["ok"]).reminder(), "Please answer ok.");
    }

    #[test]
    fn nobody_answers_a_text_question_by_default() {
        let question = TextQuestion {
            context: "",
            prompt: "server",
            secret: false,
            multiline: false,
        };
        assert_eq!(NonInteractive.enter(&question), None);
    }

    #[test]
    fn an_asker_shows_its_name_not_what_it_holds() {
        // A provider's configuration, which holds the asker, is printed with `{:?}`.
        assert_eq!(format!("{:?}", Asker::default()), "Asker");
    }

    #[test]
    fn a_set_interaction_reaches_clones_made_before() {
        struct Always;
        impl Interaction for Always {
            fn choose(&self, question: &Question<'_>) -> Option<String> {
                question.answers.first().map(|a| (*a).to_owned())
            }
        }
        let asker = Asker::default();
        let built_earlier = asker.clone();
        let question = Question {
            context: "",
            prompt: "",
            answers: &["c", "s"],
        };
        assert_eq!(built_earlier.get().choose(&question), None);
        asker.set(Arc::new(Always));
        assert_eq!(built_earlier.get().choose(&question), Some("c".to_owned()));
    }
}
