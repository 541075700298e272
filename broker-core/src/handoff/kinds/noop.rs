//! `noop`: hands nothing on, and succeeds. For policies that must name a target, and for tests.

use crate::handoff::run::{Handoff, HandoffContext, Outcome, StepError};

/// The `noop` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

#[async_trait::async_trait]
impl Handoff for Noop {
    fn name(&self) -> &str {
        "noop"
    }

    async fn run(&self, cx: &HandoffContext<'_>) -> Result<Outcome, StepError> {
        cx.log.line("noop: nothing to hand off");
        Ok(Outcome::Succeeded)
    }
}
