//! One client connection to a target: probe, load, start, events, stop, clear, close.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use taskdist_handlers::{EventKind, TargetEvent, TimedEvent};
use taskdist_tasksets::{AdmissionControl, TaskSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use super::frame::{self, Command, Expect, ServerMsg};
use super::xml::{self, LiveTask, RawEvent, TimeUnwrapper};
use super::{Binaries, Dialect, SessionConfig, TargetError};

/// Longest wait any setting can ask for (keeps instant arithmetic from overflowing).
const MAX_WAIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `base + d`, with `d` capped at [`MAX_WAIT`].
fn at(base: Instant, d: Duration) -> Instant {
    base.checked_add(d.min(MAX_WAIT)).unwrap_or(base)
}

/// Job accounting of one task in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCount {
    /// The task's id.
    pub task_id: u32,
    /// `numberofjobs` of the task.
    pub expected_jobs: u32,
    /// START events seen.
    pub started: u32,
    /// Job-ending events seen (EXIT*, OUT_OF_*, NOT_SCHEDULED).
    pub ended: u32,
    /// Whether JOBS_DONE was seen.
    pub done: bool,
}

/// The result of [`Session::run_taskset`].
#[derive(Debug, Clone)]
pub struct TasksetRun {
    /// Every event of this task-set in arrival order (after the drain, until the last
    /// JOBS_DONE).
    pub events: Vec<TimedEvent>,
    /// Events read while draining after the first CLEAR: leftovers of earlier task-sets.
    pub drained: Vec<TimedEvent>,
    /// Per-task job accounting, in task order.
    pub counts: Vec<TaskCount>,
    /// Binaries sent in this run (names that were not yet in `sent`).
    pub binaries_sent: Vec<String>,
    /// Wall-clock start (before CLEAR).
    pub started_at: SystemTime,
    /// Wall-clock end (after the last JOBS_DONE).
    pub finished_at: SystemTime,
}

/// The longest silence (no frame) that a healthy target can show while running `set`, plus
/// `cfg.silence_margin`: the sum of all offsets (on real targets START blocks for their sum,
/// and later offsets add up) plus two of the longest period (a job's first release comes one
/// period after its start, and a job ends at the latest when its next period begins), plus the
/// margin. After the first events, events follow at least once per longest period while any
/// task still runs, so this one bound covers the whole run.
pub fn silence_limit(set: &TaskSet, cfg: &SessionConfig) -> Duration {
    let offsets: u64 = set
        .tasks
        .iter()
        .map(|t| t.offset_ms)
        .fold(0, u64::saturating_add);
    let max_period = set.tasks.iter().map(|t| t.period_ms).max().unwrap_or(0);
    Duration::from_millis(offsets.saturating_add(max_period.saturating_mul(2)))
        .saturating_add(cfg.silence_margin)
}

/// Check that a target is available.
///
/// v3: open a fresh connection, send AVAILABLE, expect the echo within `reply_timeout` (frames
/// pushed meanwhile are read and dropped), close. v1/v2 have no AVAILABLE: a successful TCP
/// connect counts. Note that a target serving another session accepts the connection but does
/// not answer, so a v3 probe of a busy target times out.
pub async fn probe_available(addr: SocketAddr, cfg: &SessionConfig) -> Result<(), TargetError> {
    let mut s = Session::connect(addr, cfg.clone()).await?;
    if cfg.dialect.has_available() {
        s.check_alive().await?;
    }
    s.close().await;
    Ok(())
}

/// A client connection to one target, reusable for many task-sets in a row.
///
/// The session keeps the read buffer, the time-stamp unwrapper (time stamps are monotonic per
/// boot) and whatever the server pushed while the client waited for something else. After a
/// timeout, a lost connection or a protocol violation the session is broken: every later call
/// fails with [`TargetError::ConnectionLost`]; open a new one.
#[derive(Debug)]
pub struct Session {
    addr: SocketAddr,
    cfg: SessionConfig,
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    clock: TimeUnwrapper,
    raw: Vec<RawEvent>,
    inbox: Vec<TimedEvent>,
    echoes: u32,
    go_sends: u32,
    live: Option<Vec<LiveTask>>,
    broken: bool,
    xml: String,
}

struct Plan {
    to_send: Vec<(String, Bytes)>,
}

impl Session {
    /// Open a TCP connection (within `connect_timeout`). Nothing is sent.
    pub async fn connect(addr: SocketAddr, cfg: SessionConfig) -> Result<Session, TargetError> {
        let stream = match timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(TargetError::Timeout {
                    addr,
                    waiting_for: "TCP connect".into(),
                    after: cfg.connect_timeout,
                })
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(TargetError::Refused)
            }
            Ok(Err(source)) => {
                return Err(TargetError::Io {
                    addr,
                    during: "connecting".into(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY");
        }
        Ok(Session {
            addr,
            cfg,
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: Vec::with_capacity(16 * 1024),
            clock: TimeUnwrapper::default(),
            raw: Vec::new(),
            inbox: Vec::new(),
            echoes: 0,
            go_sends: 0,
            live: None,
            broken: false,
            xml: String::new(),
        })
    }

    /// The target's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The session's dialect.
    pub fn dialect(&self) -> Dialect {
        self.cfg.dialect
    }

    /// The session's settings.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Whether an earlier error left the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn ensure_usable(&self) -> Result<(), TargetError> {
        if self.broken {
            return Err(TargetError::ConnectionLost {
                addr: self.addr,
                during: "reusing a session that failed earlier".into(),
            });
        }
        Ok(())
    }

    fn fail<T>(&mut self, e: TargetError) -> Result<T, TargetError> {
        if matches!(
            e,
            TargetError::Timeout { .. }
                | TargetError::ConnectionLost { .. }
                | TargetError::Protocol { .. }
                | TargetError::Io { .. }
        ) {
            self.broken = true;
        }
        Err(e)
    }

    fn io_error(&mut self, e: io::Error, during: &str) -> TargetError {
        self.broken = true;
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => TargetError::ConnectionLost {
                addr: self.addr,
                during: during.into(),
            },
            _ => TargetError::Io {
                addr: self.addr,
                during: during.into(),
                source: e,
            },
        }
    }

    /// Decode what is buffered: frames become events in the inbox, echoes and GO_SENDs are
    /// counted. `want_go_send` makes a `0x90` word a GO_SEND while none is pending. With
    /// `stop_at_reply` decoding stops right after a GO_SEND or echo, so that frames behind a
    /// fence stay buffered.
    fn process(&mut self, want_go_send: bool, stop_at_reply: bool) -> Result<(), TargetError> {
        loop {
            let expect = if want_go_send && self.go_sends == 0 {
                Expect::GoSend
            } else {
                Expect::Frames
            };
            let decoded = frame::decode_server(&self.rbuf, expect, self.cfg.max_frame_bytes);
            let mut is_reply = true;
            let used = match decoded {
                Ok(None) => return Ok(()),
                Err(e) => {
                    let detail = format!("undecodable bytes from the target: {e}");
                    return self.fail(TargetError::Protocol {
                        addr: self.addr,
                        detail,
                    });
                }
                Ok(Some((ServerMsg::GoSend, n))) => {
                    self.go_sends += 1;
                    n
                }
                Ok(Some((ServerMsg::AvailableEcho, n))) => {
                    self.echoes += 1;
                    n
                }
                Ok(Some((ServerMsg::Frame(doc), n))) => {
                    is_reply = false;
                    if doc.starts_with(b"<live") {
                        match xml::parse_live(doc) {
                            Ok(rows) => self.live = Some(rows),
                            Err(e) => {
                                let detail = format!("bad live frame: {e}");
                                return self.fail(TargetError::Protocol {
                                    addr: self.addr,
                                    detail,
                                });
                            }
                        }
                    } else if let Err(e) = xml::parse_profile_into(doc, &mut self.raw) {
                        let detail = format!("bad profile frame of {} bytes: {e}", doc.len());
                        return self.fail(TargetError::Protocol {
                            addr: self.addr,
                            detail,
                        });
                    }
                    n
                }
            };
            self.rbuf.advance(used);
            if !self.raw.is_empty() {
                let host_time = SystemTime::now();
                for r in self.raw.drain(..) {
                    self.inbox.push(TimedEvent {
                        event: TargetEvent {
                            kind: r.kind,
                            task_id: r.task_id,
                            time_ms: self.clock.unwrap(r.time_stamp_ms),
                        },
                        host_time,
                    });
                }
            }
            if is_reply && stop_at_reply {
                return Ok(());
            }
        }
    }

    /// Read more bytes until `deadline`. `Ok(false)` when the deadline passed first.
    async fn fill(
        &mut self,
        deadline: Instant,
        during: &str,
        cancel: Option<&CancellationToken>,
    ) -> Result<bool, TargetError> {
        if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        let read = timeout_at(deadline, self.stream.read_buf(&mut self.rbuf));
        let res = match cancel {
            Some(c) => tokio::select! {
                biased;
                _ = c.cancelled() => return Err(TargetError::Cancelled),
                r = read => r,
            },
            None => read.await,
        };
        match res {
            Err(_) => Ok(false),
            Ok(Ok(0)) => {
                let e = TargetError::ConnectionLost {
                    addr: self.addr,
                    during: during.into(),
                };
                self.fail(e)
            }
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(self.io_error(e, during)),
        }
    }

    /// Write the whole write buffer, reading whatever arrives meanwhile (so a server that
    /// pushes while we write cannot deadlock us). Bounded by `reply_timeout` of no progress.
    async fn flush(&mut self, during: &str) -> Result<(), TargetError> {
        let mut pos = 0;
        while pos < self.wbuf.len() {
            if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                self.rbuf.reserve(64 * 1024);
            }
            let (mut rd, mut wr) = self.stream.split();
            let step = timeout(self.cfg.reply_timeout, async {
                tokio::select! {
                    w = wr.write(&self.wbuf[pos..]) => w.map(|n| (n, 0)),
                    r = rd.read_buf(&mut self.rbuf) => r.map(|n| (0, n)).and_then(|(w, n)| {
                        if n == 0 {
                            Err(io::Error::from(io::ErrorKind::UnexpectedEof))
                        } else {
                            Ok((w, n))
                        }
                    }),
                }
            })
            .await;
            match step {
                Err(_) => {
                    let e = TargetError::Timeout {
                        addr: self.addr,
                        waiting_for: format!("the target to read ({during})"),
                        after: self.cfg.reply_timeout,
                    };
                    return self.fail(e);
                }
                Ok(Err(e)) => return Err(self.io_error(e, during)),
                Ok(Ok((0, 0))) => {
                    let e = TargetError::ConnectionLost {
                        addr: self.addr,
                        during: during.into(),
                    };
                    return self.fail(e);
                }
                Ok(Ok((w, _))) => pos += w,
            }
        }
        self.wbuf.clear();
        Ok(())
    }

    /// Wait for one reply (GO_SEND or the AVAILABLE echo) until `deadline`, keeping pushed
    /// frames that arrive meanwhile as events.
    async fn wait_reply(
        &mut self,
        go_send: bool,
        deadline: Instant,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), TargetError> {
        let what = if go_send { "GO_SEND" } else { "AVAILABLE echo" };
        loop {
            self.process(go_send, true)?;
            if go_send && self.go_sends > 0 {
                self.go_sends -= 1;
                return Ok(());
            }
            if !go_send && self.echoes > 0 {
                self.echoes -= 1;
                return Ok(());
            }
            if !self.fill(deadline, what, cancel).await? {
                let e = TargetError::Timeout {
                    addr: self.addr,
                    waiting_for: what.into(),
                    after: self.cfg.reply_timeout,
                };
                return self.fail(e);
            }
        }
    }

    /// Read frames until `deadline` (no error when it passes).
    async fn collect_until(
        &mut self,
        deadline: Instant,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), TargetError> {
        loop {
            self.process(false, false)?;
            if !self.fill(deadline, "draining", cancel).await? {
                return self.process(false, false);
            }
        }
    }

    /// v3: send AVAILABLE on this connection and wait for the echo (frames pushed meanwhile
    /// are kept for [`Session::next_events`]). v1/v2: [`TargetError::Unsupported`].
    pub async fn check_alive(&mut self) -> Result<(), TargetError> {
        self.ensure_usable()?;
        if !self.cfg.dialect.has_available() {
            return Err(TargetError::Unsupported {
                dialect: self.cfg.dialect,
                what: "AVAILABLE".into(),
            });
        }
        frame::encode_command(&mut self.wbuf, Command::Available);
        self.flush("sending AVAILABLE").await?;
        let deadline = at(Instant::now(), self.cfg.reply_timeout);
        self.wait_reply(false, deadline, None).await
    }

    /// Append CLEAR plus the drain request to the write buffer.
    fn push_clear(&mut self) {
        frame::encode_command(&mut self.wbuf, Command::Clear);
        match self.cfg.dialect {
            Dialect::V3 => frame::encode_command(&mut self.wbuf, Command::Available),
            Dialect::V1 => frame::encode_command(&mut self.wbuf, Command::GetProfile),
            Dialect::V2 => {}
        }
    }

    /// After [`Session::push_clear`] was flushed: wait for the fence (v3) or the drain window
    /// (v1/v2), and take the events that arrived.
    async fn finish_drain(
        &mut self,
        cancel: Option<&CancellationToken>,
    ) -> Result<Vec<TimedEvent>, TargetError> {
        if self.cfg.dialect.has_available() {
            let deadline = at(Instant::now(), self.cfg.reply_timeout);
            self.wait_reply(false, deadline, cancel).await?;
        } else {
            let deadline = at(Instant::now(), self.cfg.drain_window);
            self.collect_until(deadline, cancel).await?;
        }
        Ok(std::mem::take(&mut self.inbox))
    }

    /// Send CLEAR (stop and delete all tasks) and drain: v3 sends AVAILABLE right after CLEAR
    /// and everything before the echo is the drain; v1/v2 have no fence and collect frames for
    /// `drain_window` (v1 also asks GET_PROFILE, as it never pushes). Returns the drained
    /// events.
    pub async fn clear(&mut self) -> Result<Vec<TimedEvent>, TargetError> {
        self.ensure_usable()?;
        self.push_clear();
        self.flush("sending CLEAR").await?;
        self.finish_drain(None).await
    }

    fn plan(
        &mut self,
        set: &TaskSet,
        admission: Option<&AdmissionControl>,
        binaries: &Binaries,
        sent: &HashSet<String>,
    ) -> Result<Plan, TargetError> {
        if admission.is_some() && !self.cfg.dialect.has_optimize() {
            return Err(TargetError::Unsupported {
                dialect: self.cfg.dialect,
                what: "admission-control data (OPTIMIZE exists only in v1)".into(),
            });
        }
        if set.tasks.is_empty() {
            return Err(TargetError::Invalid {
                reason: "the task-set has no tasks, so it would never finish".into(),
            });
        }
        set.validate().map_err(|e| TargetError::Invalid {
            reason: e.to_string(),
        })?;
        let mut to_send = Vec::new();
        for name in set.binaries() {
            if sent.contains(name) {
                continue;
            }
            let image = binaries.get(name).ok_or_else(|| TargetError::Invalid {
                reason: format!("no binary image for pkg {name:?}"),
            })?;
            if u32::try_from(image.len()).is_err() {
                return Err(TargetError::Invalid {
                    reason: format!("binary {name:?} is larger than 4 GiB"),
                });
            }
            to_send.push((name.to_owned(), image));
        }
        self.xml.clear();
        set.write_xml(&mut self.xml);
        Ok(Plan { to_send })
    }

    /// Append OPTIMIZE (if any), SEND_DESCS and the SEND_BINARIES header.
    fn push_load(
        &mut self,
        admission: Option<&AdmissionControl>,
        count: usize,
    ) -> Result<(), TargetError> {
        let enc = |e: frame::FrameError| TargetError::Invalid {
            reason: e.to_string(),
        };
        if let Some(ac) = admission {
            frame::encode_optimize(&mut self.wbuf, ac.to_xml().as_bytes()).map_err(enc)?;
        }
        frame::encode_send_descs(&mut self.wbuf, self.xml.as_bytes()).map_err(enc)?;
        frame::encode_send_binaries(&mut self.wbuf, count as u32);
        Ok(())
    }

    fn push_start(&mut self) {
        frame::encode_command(&mut self.wbuf, Command::Start);
        if !self.cfg.dialect.pushes_events() {
            frame::encode_command(&mut self.wbuf, Command::GetProfile);
        }
    }

    /// Send the binaries of `plan` one per GO_SEND; `then_start` appends START to the last.
    /// Not cancellable: a half-sent SEND_BINARIES cannot be taken back.
    async fn send_binaries(
        &mut self,
        plan: &Plan,
        sent: &mut HashSet<String>,
        then_start: bool,
    ) -> Result<(), TargetError> {
        self.flush("sending SEND_DESCS and SEND_BINARIES").await?;
        for (i, (name, image)) in plan.to_send.iter().enumerate() {
            let deadline = at(Instant::now(), self.cfg.reply_timeout);
            self.wait_reply(true, deadline, None).await?;
            frame::encode_binary(&mut self.wbuf, name, image).map_err(|e| {
                TargetError::Invalid {
                    reason: e.to_string(),
                }
            })?;
            if then_start && i + 1 == plan.to_send.len() {
                self.push_start();
            }
            self.flush("sending a binary").await?;
            sent.insert(name.clone());
        }
        if then_start && plan.to_send.is_empty() {
            self.push_start();
            self.flush("sending START").await?;
        }
        Ok(())
    }

    /// Load a task-set: [OPTIMIZE (v1)], SEND_DESCS, SEND_BINARIES with the binaries whose
    /// names are not in `sent` (each is added to `sent` once written). Send CLEAR first
    /// ([`Session::clear`]): tasks are appended to what the target holds.
    ///
    /// Fails with [`TargetError::Unsupported`] for admission data on v2/v3 and with
    /// [`TargetError::Invalid`] for an invalid task-set or a missing image, before sending.
    pub async fn load(
        &mut self,
        set: &TaskSet,
        admission: Option<&AdmissionControl>,
        binaries: &Binaries,
        sent: &mut HashSet<String>,
    ) -> Result<(), TargetError> {
        self.ensure_usable()?;
        let plan = self.plan(set, admission, binaries, sent)?;
        self.push_load(admission, plan.to_send.len())?;
        self.send_binaries(&plan, sent, false).await
    }

    /// Send START (v1: followed by GET_PROFILE, since v1 never pushes).
    pub async fn start(&mut self) -> Result<(), TargetError> {
        self.ensure_usable()?;
        self.push_start();
        self.flush("sending START").await
    }

    /// Send STOP (running jobs end with EXIT_EXTERNAL).
    pub async fn stop(&mut self) -> Result<(), TargetError> {
        self.ensure_usable()?;
        frame::encode_command(&mut self.wbuf, Command::Stop);
        self.flush("sending STOP").await
    }

    /// Events that arrived so far; if none, wait up to `wait` for a frame (v1: ask with
    /// GET_PROFILE first). An empty vector means nothing came in time (not an error: events
    /// come only when jobs exit).
    pub async fn next_events(&mut self, wait: Duration) -> Result<Vec<TimedEvent>, TargetError> {
        self.ensure_usable()?;
        self.process(false, false)?;
        if self.inbox.is_empty() {
            if !self.cfg.dialect.pushes_events() {
                frame::encode_command(&mut self.wbuf, Command::GetProfile);
                self.flush("sending GET_PROFILE").await?;
            }
            let deadline = at(Instant::now(), wait);
            while self.inbox.is_empty() {
                if !self.fill(deadline, "waiting for events", None).await? {
                    break;
                }
                self.process(false, false)?;
            }
        }
        Ok(std::mem::take(&mut self.inbox))
    }

    /// Ask GET_LIVE and wait up to `reply_timeout` for the live document. `Ok(None)` if no
    /// answer came (the server answers nothing when it has nothing to report).
    pub async fn get_live(&mut self) -> Result<Option<Vec<LiveTask>>, TargetError> {
        self.ensure_usable()?;
        self.live = None;
        frame::encode_command(&mut self.wbuf, Command::GetLive);
        self.flush("sending GET_LIVE").await?;
        let deadline = at(Instant::now(), self.cfg.reply_timeout);
        while self.live.is_none() {
            self.process(false, false)?;
            if self.live.is_some() || !self.fill(deadline, "GET_LIVE", None).await? {
                break;
            }
        }
        Ok(self.live.take())
    }

    /// Close the connection (best effort; errors are logged).
    pub async fn close(mut self) {
        if let Err(e) = timeout(Duration::from_secs(1), self.stream.shutdown()).await {
            tracing::debug!(addr = %self.addr, error = %e, "shutdown timed out");
        }
    }

    /// Best effort STOP + CLEAR after a failure or cancellation (short timeout, no drain).
    async fn stop_and_clear_quietly(&mut self) {
        if self.broken {
            return;
        }
        self.wbuf.clear();
        frame::encode_command(&mut self.wbuf, Command::Stop);
        frame::encode_command(&mut self.wbuf, Command::Clear);
        if let Err(e) = self.flush("sending STOP and CLEAR").await {
            tracing::debug!(addr = %self.addr, error = %e, "STOP/CLEAR after failure failed");
        }
    }

    /// Run one task-set on this connection: CLEAR, drain, [OPTIMIZE (v1)], SEND_DESCS,
    /// SEND_BINARIES (only names not in `sent`, which it updates), START, events until every
    /// task sent JOBS_DONE, then STOP and CLEAR (written, not awaited: the next run's drain
    /// takes their effects).
    ///
    /// v3 with nothing new to send writes everything from CLEAR to START in one batch: CLEAR,
    /// AVAILABLE (the fence: frames before its echo are the drain), SEND_DESCS,
    /// SEND_BINARIES 0, START. v1/v2 wait `drain_window` after CLEAR.
    ///
    /// While waiting for events, the silence limit is [`silence_limit`]; v3 also sends
    /// AVAILABLE after each `liveness_interval` without a frame and fails if the echo does not
    /// come within `reply_timeout`. v1 polls GET_PROFILE.
    ///
    /// Live events go to `on_events` as they arrive; all are returned too. Errors:
    /// [`TargetError::TargetFault`] on EXIT_ERROR or when a task's job count differs from
    /// `numberofjobs`; on cancellation STOP and CLEAR are sent and
    /// [`TargetError::Cancelled`] is returned.
    pub async fn run_taskset(
        &mut self,
        set: &TaskSet,
        admission: Option<&AdmissionControl>,
        binaries: &Binaries,
        sent: &mut HashSet<String>,
        on_events: &mut (dyn FnMut(&[TimedEvent]) + Send),
        cancel: &CancellationToken,
    ) -> Result<TasksetRun, TargetError> {
        self.ensure_usable()?;
        let res = self
            .run_inner(set, admission, binaries, sent, on_events, cancel)
            .await;
        if let Err(e) = &res {
            if matches!(e, TargetError::Cancelled | TargetError::TargetFault { .. }) {
                self.stop_and_clear_quietly().await;
            }
        }
        res
    }

    async fn run_inner(
        &mut self,
        set: &TaskSet,
        admission: Option<&AdmissionControl>,
        binaries: &Binaries,
        sent: &mut HashSet<String>,
        on_events: &mut (dyn FnMut(&[TimedEvent]) + Send),
        cancel: &CancellationToken,
    ) -> Result<TasksetRun, TargetError> {
        if cancel.is_cancelled() {
            return Err(TargetError::Cancelled);
        }
        let plan = self.plan(set, admission, binaries, sent)?;
        let started_at = SystemTime::now();
        self.wbuf.clear();
        self.push_clear();
        let pipelined = self.cfg.dialect.has_available() && plan.to_send.is_empty();
        if pipelined {
            self.push_load(admission, 0)?;
            self.push_start();
        }
        self.flush("sending CLEAR").await?;
        let drained = self.finish_drain(Some(cancel)).await?;
        if !pipelined {
            self.push_load(admission, plan.to_send.len())?;
            // Not cancellable midway: a half-sent SEND_BINARIES cannot be taken back without
            // corrupting the stream; each step is bounded by `reply_timeout`.
            self.send_binaries(&plan, sent, true).await?;
            if cancel.is_cancelled() {
                return Err(TargetError::Cancelled);
            }
        }
        let binaries_sent = plan.to_send.iter().map(|(n, _)| n.clone()).collect();
        let (events, counts) = self.collect_run(set, on_events, cancel).await?;
        frame::encode_command(&mut self.wbuf, Command::Stop);
        frame::encode_command(&mut self.wbuf, Command::Clear);
        self.flush("sending STOP and CLEAR").await?;
        Ok(TasksetRun {
            events,
            drained,
            counts,
            binaries_sent,
            started_at,
            finished_at: SystemTime::now(),
        })
    }

    async fn collect_run(
        &mut self,
        set: &TaskSet,
        on_events: &mut (dyn FnMut(&[TimedEvent]) + Send),
        cancel: &CancellationToken,
    ) -> Result<(Vec<TimedEvent>, Vec<TaskCount>), TargetError> {
        let mut counts: Vec<TaskCount> = set
            .tasks
            .iter()
            .map(|t| TaskCount {
                task_id: t.id,
                expected_jobs: t.numberofjobs,
                started: 0,
                ended: 0,
                done: false,
            })
            .collect();
        let index: Option<HashMap<u32, usize>> = (counts.len() > 16).then(|| {
            counts
                .iter()
                .enumerate()
                .map(|(i, c)| (c.task_id, i))
                .collect()
        });
        let mut remaining = counts.len();
        let mut events: Vec<TimedEvent> = Vec::new();
        let limit = silence_limit(set, &self.cfg);
        let v3 = self.cfg.dialect.has_available();
        let polls = !self.cfg.dialect.pushes_events();
        let mut last_event = Instant::now();
        let mut last_life = last_event;
        // START blocks the server for the sum of all offsets: an echo may wait that long.
        let start_block = Duration::from_millis(
            set.tasks
                .iter()
                .map(|t| t.offset_ms)
                .fold(0, u64::saturating_add),
        );
        let start_block_end = at(last_event, start_block);
        let mut probe_deadline: Option<Instant> = None;
        let mut next_poll = at(last_event, self.cfg.poll_interval);
        loop {
            self.process(false, false)?;
            if self.echoes > 0 {
                self.echoes = 0;
                probe_deadline = None;
                last_life = Instant::now();
            }
            if !self.inbox.is_empty() {
                let now = Instant::now();
                last_event = now;
                last_life = now;
                let mut fault: Option<String> = None;
                for ev in &self.inbox {
                    let e = &ev.event;
                    let slot = match &index {
                        Some(m) => m.get(&e.task_id).copied(),
                        None => counts.iter().position(|c| c.task_id == e.task_id),
                    };
                    let Some(i) = slot else {
                        tracing::warn!(addr = %self.addr, task = e.task_id, kind = %e.kind,
                            "event for a task that is not in the task-set");
                        continue;
                    };
                    let c = &mut counts[i];
                    match &e.kind {
                        EventKind::Start => c.started += 1,
                        EventKind::JobsDone => {
                            if c.done {
                                tracing::warn!(addr = %self.addr, task = e.task_id, "second JOBS_DONE");
                            } else {
                                c.done = true;
                                remaining -= 1;
                            }
                        }
                        k if k.ends_job() => {
                            c.ended += 1;
                            if *k == EventKind::ExitError && fault.is_none() {
                                fault = Some(format!(
                                    "EXIT_ERROR for task {} at {} ms",
                                    e.task_id, e.time_ms
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                on_events(&self.inbox);
                events.append(&mut self.inbox);
                if let Some(reason) = fault {
                    return Err(TargetError::TargetFault {
                        addr: self.addr,
                        reason,
                    });
                }
                if remaining == 0 {
                    break;
                }
                if polls {
                    frame::encode_command(&mut self.wbuf, Command::GetProfile);
                    self.flush("sending GET_PROFILE").await?;
                    next_poll = at(Instant::now(), self.cfg.poll_interval);
                }
            }
            let mut deadline = at(last_event, limit);
            if v3 {
                deadline = deadline
                    .min(probe_deadline.unwrap_or(at(last_life, self.cfg.liveness_interval)));
            }
            if polls {
                deadline = deadline.min(next_poll);
            }
            if self
                .fill(deadline, "waiting for job events", Some(cancel))
                .await?
            {
                continue;
            }
            let now = Instant::now();
            if now >= at(last_event, limit) {
                let e = TargetError::Timeout {
                    addr: self.addr,
                    waiting_for: format!(
                        "job events ({} of {} tasks not done)",
                        remaining,
                        counts.len()
                    ),
                    after: limit,
                };
                return self.fail(e);
            }
            if let Some(pd) = probe_deadline {
                if now >= pd {
                    let e = TargetError::Timeout {
                        addr: self.addr,
                        waiting_for: "AVAILABLE echo during a run".into(),
                        after: self.cfg.reply_timeout,
                    };
                    return self.fail(e);
                }
            } else if v3 && now >= at(last_life, self.cfg.liveness_interval) {
                frame::encode_command(&mut self.wbuf, Command::Available);
                self.flush("sending AVAILABLE").await?;
                let now = Instant::now();
                probe_deadline = Some(
                    at(now, self.cfg.reply_timeout)
                        .max(at(start_block_end, self.cfg.reply_timeout)),
                );
            }
            if polls && now >= next_poll {
                frame::encode_command(&mut self.wbuf, Command::GetProfile);
                self.flush("sending GET_PROFILE").await?;
                next_poll = at(Instant::now(), self.cfg.poll_interval);
            }
        }
        for c in &counts {
            if c.ended != c.expected_jobs {
                return Err(TargetError::TargetFault {
                    addr: self.addr,
                    reason: format!(
                        "task {} ended {} jobs, numberofjobs is {}",
                        c.task_id, c.ended, c.expected_jobs
                    ),
                });
            }
        }
        Ok((events, counts))
    }
}
