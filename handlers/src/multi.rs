//! Several handlers behind one: [`Multi`] and the impl for `Vec<Box<dyn EventHandler>>`.

use async_trait::async_trait;

use crate::event::{
    AttemptId, RunInfo, RunSummary, TimedEvent, VariantBad, VariantFinished, VariantStarted,
    VariantStopped,
};
use crate::handler::{EventHandler, HandlerError};

/// Calls every handler in turn, in order; the first error stops the call and is returned.
///
/// This is a plain sequential combinator for scripts and tests; the distributor has its own
/// fan-out with one bounded channel per handler.
///
/// ```
/// use taskdist_handlers::{ConsoleHandler, EventHandler, Multi};
/// let mut all = Multi::new();
/// all.push(ConsoleHandler::new(Box::new(std::io::sink())));
/// assert_eq!(all.len(), 1);
/// ```
#[derive(Default)]
pub struct Multi {
    handlers: Vec<Box<dyn EventHandler>>,
}

impl std::fmt::Debug for Multi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multi")
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

impl Multi {
    /// No handlers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a handler; it is called after those added before.
    pub fn push(&mut self, handler: impl EventHandler + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// Number of handlers.
    pub fn len(&self) -> usize {
        self.handlers.len()
    }

    /// Whether there are no handlers.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// The handlers, e.g. to hand them to a distributor one by one.
    pub fn into_inner(self) -> Vec<Box<dyn EventHandler>> {
        self.handlers
    }
}

#[async_trait]
impl EventHandler for Vec<Box<dyn EventHandler>> {
    async fn run_started(&mut self, run: &RunInfo) -> Result<(), HandlerError> {
        for h in self.iter_mut() {
            h.run_started(run).await?;
        }
        Ok(())
    }
    async fn taskset_started(&mut self, v: &VariantStarted) -> Result<(), HandlerError> {
        for h in self.iter_mut() {
            h.taskset_started(v).await?;
        }
        Ok(())
    }
    async fn events(&mut self, id: &AttemptId, events: &[TimedEvent]) -> Result<(), HandlerError> {
        for h in self.iter_mut() {
            h.events(id, events).await?;
        }
        Ok(())
    }
    async fn taskset_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        for h in self.iter_mut() {
            h.taskset_finished(v).await?;
        }
        Ok(())
    }
    async fn taskset_stopped(&mut self, v: &VariantStopped) -> Result<(), HandlerError> {
        for h in self.iter_mut() {
            h.taskset_stopped(v).await?;
        }
        Ok(())
    }
    async fn taskset_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        for h in self.iter_mut() {
            h.taskset_bad(v).await?;
        }
        Ok(())
    }
    async fn run_finished(&mut self, summary: &RunSummary) -> Result<(), HandlerError> {
        for h in self.iter_mut() {
            h.run_finished(summary).await?;
        }
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), HandlerError> {
        for h in self.iter_mut() {
            h.flush().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl EventHandler for Multi {
    async fn run_started(&mut self, run: &RunInfo) -> Result<(), HandlerError> {
        self.handlers.run_started(run).await
    }
    async fn taskset_started(&mut self, v: &VariantStarted) -> Result<(), HandlerError> {
        self.handlers.taskset_started(v).await
    }
    async fn events(&mut self, id: &AttemptId, events: &[TimedEvent]) -> Result<(), HandlerError> {
        self.handlers.events(id, events).await
    }
    async fn taskset_finished(&mut self, v: &VariantFinished) -> Result<(), HandlerError> {
        self.handlers.taskset_finished(v).await
    }
    async fn taskset_stopped(&mut self, v: &VariantStopped) -> Result<(), HandlerError> {
        self.handlers.taskset_stopped(v).await
    }
    async fn taskset_bad(&mut self, v: &VariantBad) -> Result<(), HandlerError> {
        self.handlers.taskset_bad(v).await
    }
    async fn run_finished(&mut self, summary: &RunSummary) -> Result<(), HandlerError> {
        self.handlers.run_finished(summary).await
    }
    async fn flush(&mut self) -> Result<(), HandlerError> {
        self.handlers.flush().await
    }
}
