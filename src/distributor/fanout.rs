//! Fan-out of run events to the handlers: one dedicated OS thread per handler, each fed by its
//! own bounded channel. A full channel makes the sender wait (back-pressure); nothing is dropped,
//! except live-event notifications, which are best-effort by design (results travel in
//! `taskset_finished`).
//!
//! Handlers write files and SQLite databases with blocking calls. Running them on the async
//! runtime's worker threads would let a slow disk stall the sessions on the same workers into
//! spurious liveness timeouts, so each handler runs on a thread of its own. The
//! [`EventHandler`] trait stays async: the thread drives the handler with a small
//! current-thread runtime, so a custom handler may still `.await` (timers, network clients)
//! and an existing one needs no change. Messages and flush requests share one channel per
//! handler and are handled in order, so a flush is acknowledged only after every message sent
//! before it was delivered.

use std::sync::Arc;

use taskdist_handlers::{
    AttemptId, EventHandler, HandlerError, RunInfo, RunSummary, TimedEvent, VariantBad,
    VariantFinished, VariantStarted, VariantStopped,
};
use tokio::sync::{mpsc, oneshot};

/// How long a handler thread lets messages gather when its queue runs empty.
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

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

/// The handler threads of a distributor.
pub(crate) struct Fanout {
    senders: Vec<mpsc::Sender<Envelope>>,
    /// One per handler thread: its final result, sent after the handler was dropped (files
    /// closed). A dropped sender means the thread ended without reporting (it panicked).
    done: Vec<oneshot::Receiver<Result<(), HandlerError>>>,
}

impl Fanout {
    /// Start one thread per handler. A thread that cannot be started makes every send fail
    /// ("an event handler stopped") and [`Fanout::join`] report why.
    pub(crate) fn spawn(handlers: Vec<Box<dyn EventHandler>>) -> Self {
        let mut senders = Vec::with_capacity(handlers.len());
        let mut done = Vec::with_capacity(handlers.len());
        for (i, h) in handlers.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Envelope>(HANDLER_QUEUE);
            let (done_tx, mut done_rx) = oneshot::channel();
            let started = std::thread::Builder::new()
                .name(format!("taskdist-handler-{i}"))
                .spawn(move || {
                    let _ = done_tx.send(run_handler(h, rx));
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start an event handler thread");
                let (failed_tx, failed_rx) = oneshot::channel();
                let _ = failed_tx.send(Err(HandlerError::Other(format!(
                    "cannot start an event handler thread: {e}"
                ))));
                done_rx = failed_rx;
            }
            senders.push(tx);
            done.push(done_rx);
        }
        Fanout { senders, done }
    }

    /// A cheap handle for sending from workers.
    pub(crate) fn sender(&self) -> FanoutSender {
        FanoutSender {
            senders: self.senders.clone().into(),
        }
    }

    /// Close the channels and wait for every handler thread (each has dropped its handler when
    /// this returns).
    pub(crate) async fn join(mut self) -> Result<(), HandlerError> {
        self.senders.clear();
        let mut first = Ok(());
        for rx in self.done {
            let r = rx.await.unwrap_or_else(|_| {
                Err(HandlerError::Other(
                    "an event handler thread panicked".into(),
                ))
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// The body of a handler thread: deliver messages in order until every sender is gone.
fn run_handler(
    mut h: Box<dyn EventHandler>,
    rx: mpsc::Receiver<Envelope>,
) -> Result<(), HandlerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HandlerError::Other(format!("cannot start a handler runtime: {e}")))?;
    let r = rt.block_on(handler_loop(h.as_mut(), rx));
    // Close files before reporting, so that the caller of `join` finds them complete.
    drop(h);
    drop(rt);
    r
}

async fn handler_loop(
    h: &mut dyn EventHandler,
    mut rx: mpsc::Receiver<Envelope>,
) -> Result<(), HandlerError> {
    let mut failed: Option<String> = None;
    loop {
        let env = match rx.try_recv() {
            Ok(env) => env,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing queued: let a batch gather before sleeping on the channel, so a busy
                // run wakes this thread about once per millisecond, not once per message
                // (on two cores a wake-up per message cost a fifth of the CSV throughput).
                tokio::time::sleep(BATCH_WAIT).await;
                match rx.recv().await {
                    Some(env) => env,
                    None => break,
                }
            }
        };
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
                if let Err(e) = deliver(h, &m).await {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;

    /// Blocks its thread in `run_finished` until told to go (or 5 s passed).
    struct Blocking {
        go: std::sync::mpsc::Receiver<()>,
        got_go: Arc<AtomicBool>,
    }

    #[async_trait]
    impl EventHandler for Blocking {
        async fn run_finished(&mut self, _s: &RunSummary) -> Result<(), HandlerError> {
            let got = self.go.recv_timeout(Duration::from_secs(5)).is_ok();
            self.got_go.store(got, Ordering::SeqCst);
            Ok(())
        }
    }

    /// A handler that blocks its thread must not stall the runtime that runs the sessions:
    /// here the runtime has a single thread, and the signal the handler waits for comes from a
    /// task on it. Were the handler driven on that thread, it would wait out its 5 s alone.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_handler_leaves_the_runtime_free() {
        let (go_tx, go) = std::sync::mpsc::channel();
        let got_go = Arc::new(AtomicBool::new(false));
        let fanout = Fanout::spawn(vec![Box::new(Blocking {
            go,
            got_go: got_go.clone(),
        })]);
        let sender = fanout.sender();
        sender
            .send(Msg::RunFinished(Arc::new(RunSummary::default())))
            .await
            .expect("send");
        // Give the handler time to start blocking; the runtime keeps running meanwhile.
        tokio::time::sleep(Duration::from_millis(50)).await;
        go_tx.send(()).expect("handler still waiting");
        drop(sender);
        fanout.join().await.expect("handler ends cleanly");
        assert!(
            got_go.load(Ordering::SeqCst),
            "the handler blocked the runtime thread"
        );
    }

    /// Counts finished runs slowly.
    struct Slow {
        seen: Arc<AtomicU64>,
        fail_at: Option<u64>,
    }

    #[async_trait]
    impl EventHandler for Slow {
        async fn run_finished(&mut self, _s: &RunSummary) -> Result<(), HandlerError> {
            std::thread::sleep(Duration::from_millis(1));
            let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
            if Some(n) == self.fail_at {
                return Err(HandlerError::Other("disk full".into()));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn flush_comes_after_everything_sent_before() {
        let seen = Arc::new(AtomicU64::new(0));
        let fanout = Fanout::spawn(vec![Box::new(Slow {
            seen: seen.clone(),
            fail_at: None,
        })]);
        let sender = fanout.sender();
        for _ in 0..40 {
            sender
                .send(Msg::RunFinished(Arc::new(RunSummary::default())))
                .await
                .expect("send");
        }
        sender.flush().await.expect("flush");
        assert_eq!(seen.load(Ordering::SeqCst), 40);
        drop(sender);
        fanout.join().await.expect("join");
    }

    #[tokio::test]
    async fn a_failed_handler_fails_the_next_flush_and_the_join() {
        let seen = Arc::new(AtomicU64::new(0));
        let fanout = Fanout::spawn(vec![Box::new(Slow {
            seen: seen.clone(),
            fail_at: Some(3),
        })]);
        let sender = fanout.sender();
        for _ in 0..5 {
            sender
                .send(Msg::RunFinished(Arc::new(RunSummary::default())))
                .await
                .expect("send");
        }
        let err = sender.flush().await.expect_err("flush after a failure");
        assert!(err.to_string().contains("disk full"), "{err}");
        // Nothing is delivered after the failure.
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        drop(sender);
        let err = fanout.join().await.expect_err("join reports the failure");
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
