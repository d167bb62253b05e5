//! Fan-out of run events to the handlers: one task per handler, each fed by its own bounded
//! channel. A full channel makes the sender wait (back-pressure); nothing is dropped, except
//! live-event notifications, which are best-effort by design (results travel in
//! `taskset_finished`).

use std::sync::Arc;

use taskdist_handlers::{
    AttemptId, EventHandler, HandlerError, RunInfo, RunSummary, TimedEvent, VariantBad,
    VariantFinished, VariantStarted, VariantStopped,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Capacity of each handler's channel.
const HANDLER_QUEUE: usize = 1024;

/// A message for the handlers.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    RunStarted(Arc<RunInfo>),
    Started(Arc<VariantStarted>),
    Live(AttemptId, Arc<Vec<TimedEvent>>),
    Finished(Arc<VariantFinished>),
    Stopped(Arc<VariantStopped>),
    Bad(Arc<VariantBad>),
    RunFinished(Arc<RunSummary>),
}

enum Envelope {
    Msg(Msg),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The handler tasks of a distributor.
pub(crate) struct Fanout {
    senders: Vec<mpsc::Sender<Envelope>>,
    tasks: JoinSet<Result<(), HandlerError>>,
}

impl Fanout {
    /// Spawn one task per handler.
    pub(crate) fn spawn(handlers: Vec<Box<dyn EventHandler>>) -> Self {
        let mut tasks = JoinSet::new();
        let mut senders = Vec::with_capacity(handlers.len());
        for mut h in handlers {
            let (tx, mut rx) = mpsc::channel::<Envelope>(HANDLER_QUEUE);
            senders.push(tx);
            tasks.spawn(async move {
                let mut failed: Option<String> = None;
                while let Some(env) = rx.recv().await {
                    match env {
                        Envelope::Flush(ack) => {
                            let r = match &failed {
                                Some(e) => Err(e.clone()),
                                None => h.flush().await.map_err(|e| e.to_string()),
                            };
                            if let Err(e) = &r {
                                failed.get_or_insert_with(|| e.clone());
                            }
                            let _ = ack.send(r);
                        }
                        Envelope::Msg(_) if failed.is_some() => {}
                        Envelope::Msg(m) => {
                            if let Err(e) = deliver(h.as_mut(), &m).await {
                                tracing::error!(error = %e, "event handler failed");
                                failed = Some(e.to_string());
                            }
                        }
                    }
                }
                match failed {
                    Some(e) => Err(HandlerError::Other(e)),
                    None => Ok(()),
                }
            });
        }
        Fanout { senders, tasks }
    }

    /// A cheap handle for sending from workers.
    pub(crate) fn sender(&self) -> FanoutSender {
        FanoutSender {
            senders: self.senders.clone().into(),
        }
    }

    /// Close the channels and wait for every handler task.
    pub(crate) async fn join(mut self) -> Result<(), HandlerError> {
        self.senders.clear();
        let mut first = Ok(());
        while let Some(r) = self.tasks.join_next().await {
            let r = r.unwrap_or_else(|e| Err(HandlerError::Other(format!("handler task: {e}"))));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

async fn deliver(h: &mut dyn EventHandler, m: &Msg) -> Result<(), HandlerError> {
    match m {
        Msg::RunStarted(r) => h.run_started(r).await,
        Msg::Started(v) => h.taskset_started(v).await,
        Msg::Live(id, ev) => h.events(id, ev).await,
        Msg::Finished(v) => h.taskset_finished(v).await,
        Msg::Stopped(v) => h.taskset_stopped(v).await,
        Msg::Bad(v) => h.taskset_bad(v).await,
        Msg::RunFinished(s) => h.run_finished(s).await,
    }
}

/// Sends to every handler.
#[derive(Clone)]
pub(crate) struct FanoutSender {
    senders: Arc<[mpsc::Sender<Envelope>]>,
}

impl FanoutSender {
    /// Deliver to every handler, waiting while a channel is full.
    pub(crate) async fn send(&self, m: Msg) -> Result<(), HandlerError> {
        for tx in self.senders.iter() {
            tx.send(Envelope::Msg(m.clone()))
                .await
                .map_err(|_| HandlerError::Other("an event handler stopped".into()))?;
        }
        Ok(())
    }

    /// Best-effort delivery (live events): skipped for a handler whose channel is full.
    /// Returns how many handlers missed it.
    pub(crate) fn offer(&self, m: Msg) -> usize {
        self.senders
            .iter()
            .filter(|tx| tx.try_send(Envelope::Msg(m.clone())).is_err())
            .count()
    }

    /// Ask every handler to flush everything sent before; resolves when all have.
    pub(crate) async fn flush(&self) -> Result<(), HandlerError> {
        let mut acks = Vec::with_capacity(self.senders.len());
        for tx in self.senders.iter() {
            let (ack, rx) = oneshot::channel();
            tx.send(Envelope::Flush(ack))
                .await
                .map_err(|_| HandlerError::Other("an event handler stopped".into()))?;
            acks.push(rx);
        }
        for rx in acks {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(HandlerError::Other(e)),
                Err(_) => return Err(HandlerError::Other("an event handler stopped".into())),
            }
        }
        Ok(())
    }
}
