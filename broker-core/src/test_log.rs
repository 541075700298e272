//! A `tracing` subscriber for unit tests that look at what broker logs: it keeps the level and
//! message of every event.
//!
//! Tests run in parallel threads of one process, and `tracing` decides once per call site, for the
//! whole process, whether that call site is of interest. When at most one dispatcher exists, the
//! decision is made against the default subscriber of whichever thread reaches the call site first:
//! a test thread without one would settle "never" for every thread, and a test collecting events
//! would see none. [`Collect::new`] therefore first registers two dispatchers that stay for the
//! rest of the run and are interested in everything; with more than one registered, every decision
//! asks all of them. They are never any thread's default, so they receive no event.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::Level;

/// The events logged while it is the subscriber, as (level, message).
pub(crate) type Events = Arc<Mutex<Vec<(Level, String)>>>;

/// Keeps every event's level and message in its [`Events`].
pub(crate) struct Collect(pub(crate) Events);

impl Collect {
    /// A subscriber and the events it will keep.
    pub(crate) fn new() -> (Collect, Events) {
        static ANCHORS: OnceLock<[tracing::Dispatch; 2]> = OnceLock::new();
        // Collectors no thread makes its default: interested in everything, sent nothing.
        ANCHORS
            .get_or_init(|| [(), ()].map(|()| tracing::Dispatch::new(Collect(Events::default()))));
        let events = Events::default();
        (Collect(Arc::clone(&events)), events)
    }
}

impl tracing::Subscriber for Collect {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        crate::sync::lock(&self.0).push((*event.metadata().level(), message.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
