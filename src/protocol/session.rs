//! One client connection to a target: probe, load, start, events, stop, clear, close.
//!
//! The session is split by concern: the byte loop (reading, decoding, writing) lives on
//! `Session`; what a task-set's events may look like is checked by `Tally` (pure, no I/O);
//! and the waits of a running task-set (silence, liveness probe, poll, hard limit) are kept
//! by `Watch`.

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
use crate::time::{at, MAX_WAIT};

/// Events of unknown types an attempt may carry beyond what its jobs produce.
const EVENT_SLACK: u64 = 64;

/// The GO_SEND word as it arrives on the wire.
const GO_SEND_WORD: [u8; 4] = 0x90u32.to_le_bytes();

/// How long a lone `0x90` word waits for a frame body before it counts as GO_SEND: longer
/// than a delayed ACK (40–200 ms on Linux), which a server with Nagle's algorithm on waits
/// for before it sends the body after the length word. Paid once per binary sent (a real
/// GO_SEND always arrives alone), i.e. a few times per target boot.
const GO_SEND_GRACE: Duration = Duration::from_millis(250);

/// Events that may pile up while the client waits for a reply (fence, GO_SEND); more is a
/// protocol violation (a real drain holds a few dozen).
const MAX_PENDING_EVENTS: usize = 100_000;

/// Stale events one attempt may see after START before it fails: a few leftovers are normal,
/// a flood of them is a target fault.
const MAX_STALE_EVENTS: u64 = 10_000;

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
    /// Every event of this task-set in arrival order (after START, until the last JOBS_DONE).
    pub events: Vec<TimedEvent>,
    /// Stale events: leftovers of earlier task-sets, read before this task-set's START (the
    /// drain after CLEAR, pushes while a GO_SEND was awaited) or job endings that came before
    /// any job of this task-set had started. They are never charged to this task-set.
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

/// Sum of all offsets of `set` (on real targets START blocks for this long).
fn offsets_sum(set: &TaskSet) -> Duration {
    Duration::from_millis(
        set.tasks
            .iter()
            .map(|t| t.offset_ms)
            .fold(0, u64::saturating_add),
    )
}

/// The longest silence (no frame) that a healthy target can show while running `set`, plus
/// `cfg.silence_margin`: the sum of all offsets (on real targets START blocks for their sum,
/// and later offsets add up) plus two of the longest period (a job's first release comes one
/// period after its start, and a job ends at the latest when its next period begins), plus the
/// margin. After the first events, events follow at least once per longest period while any
/// task still runs, so this one bound covers the whole run.
pub fn silence_limit(set: &TaskSet, cfg: &SessionConfig) -> Duration {
    let max_period = set.tasks.iter().map(|t| t.period_ms).max().unwrap_or(0);
    offsets_sum(set)
        .saturating_add(Duration::from_millis(max_period.saturating_mul(2)))
        .saturating_add(cfg.silence_margin)
}

/// The longest a healthy target can take to run all of `set` after START, plus
/// `cfg.silence_margin`: the sum of all offsets plus, for the slowest task,
/// `2 × numberofjobs + 1` periods. The first job is released one period after the task
/// starts; a job still running at its next release is killed there (EXIT_PERIOD) and the real
/// Taskloader starts the next job only at the release after that, so an overloaded task needs
/// two periods per job. An attempt that has not finished by then fails, however many events
/// the target keeps sending.
pub fn attempt_limit(set: &TaskSet, cfg: &SessionConfig) -> Duration {
    let slowest = set
        .tasks
        .iter()
        .map(|t| {
            t.period_ms.saturating_mul(
                u64::from(t.numberofjobs)
                    .saturating_mul(2)
                    .saturating_add(1),
            )
        })
        .max()
        .unwrap_or(0);
    offsets_sum(set)
        .saturating_add(Duration::from_millis(slowest))
        .saturating_add(cfg.silence_margin)
}

/// The most events a correct run of `set` can produce: per task one START and one ending per
/// job plus one JOBS_DONE, plus a small slack for event types the protocol does not name.
pub fn event_budget(set: &TaskSet) -> u64 {
    set.tasks
        .iter()
        .map(|t| {
            u64::from(t.numberofjobs)
                .saturating_mul(2)
                .saturating_add(1)
        })
        .fold(EVENT_SLACK, u64::saturating_add)
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

/// What [`Tally::take`] made of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The event belongs to the task-set.
    Counted,
    /// A leftover of an earlier task-set.
    Stale,
}

/// The job accounting of one attempt and the limits its events must respect. Pure logic.
#[derive(Debug)]
struct Tally {
    counts: Vec<TaskCount>,
    /// Task id → position in `counts`, for large task-sets.
    index: Option<HashMap<u32, usize>>,
    /// Tasks without JOBS_DONE yet.
    remaining: usize,
    /// A job of this task-set has begun (START or NOT_SCHEDULED seen). Before that, job
    /// endings and JOBS_DONE cannot belong to this task-set: they are stale.
    begun: bool,
    /// Events this attempt may count ([`event_budget`]), and those counted so far.
    budget: u64,
    counted: u64,
}

impl Tally {
    fn new(set: &TaskSet) -> Tally {
        let counts: Vec<TaskCount> = set
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
        let index = (counts.len() > 16).then(|| {
            counts
                .iter()
                .enumerate()
                .map(|(i, c)| (c.task_id, i))
                .collect()
        });
        Tally {
            remaining: counts.len(),
            counts,
            index,
            begun: false,
            budget: event_budget(set),
            counted: 0,
        }
    }

    fn finished(&self) -> bool {
        self.remaining == 0
    }

    /// Account one event. `Err` names why the target misbehaved.
    fn take(&mut self, e: &TargetEvent) -> Result<Verdict, String> {
        let begins = matches!(e.kind, EventKind::Start | EventKind::NotScheduled);
        if !self.begun && !begins && (e.kind.ends_job() || e.kind == EventKind::JobsDone) {
            return Ok(Verdict::Stale);
        }
        self.begun |= begins;
        if self.counted == self.budget {
            return Err(format!(
                "more events than the task-set can produce ({} at most)",
                self.budget
            ));
        }
        self.counted += 1;
        let slot = match &self.index {
            Some(m) => m.get(&e.task_id).copied(),
            None => self.counts.iter().position(|c| c.task_id == e.task_id),
        };
        let Some(i) = slot else {
            return Err(format!(
                "{} event for task {}, which is not in the task-set",
                e.kind, e.task_id
            ));
        };
        let c = &mut self.counts[i];
        match &e.kind {
            EventKind::Start => {
                c.started += 1;
                if c.started > c.expected_jobs {
                    return Err(format!(
                        "task {} started {} jobs, numberofjobs is {}",
                        c.task_id, c.started, c.expected_jobs
                    ));
                }
            }
            EventKind::JobsDone => {
                if c.done {
                    return Err(format!("second JOBS_DONE for task {}", c.task_id));
                }
                c.done = true;
                self.remaining -= 1;
            }
            k if k.ends_job() => {
                c.ended += 1;
                if *k == EventKind::ExitError {
                    return Err(format!(
                        "EXIT_ERROR for task {} at {} ms",
                        e.task_id, e.time_ms
                    ));
                }
                if c.ended > c.expected_jobs {
                    return Err(format!(
                        "task {} ended {} jobs, numberofjobs is {}",
                        c.task_id, c.ended, c.expected_jobs
                    ));
                }
            }
            _ => {}
        }
        Ok(Verdict::Counted)
    }

    /// After every JOBS_DONE: each task ran exactly `numberofjobs` jobs.
    fn check_complete(&self) -> Result<(), String> {
        match self.counts.iter().find(|c| c.ended != c.expected_jobs) {
            Some(c) => Err(format!(
                "task {} ended {} jobs, numberofjobs is {}",
                c.task_id, c.ended, c.expected_jobs
            )),
            None => Ok(()),
        }
    }
}

/// What a [`Watch`] asks for when its wake-up time has come.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Nothing yet.
    Nothing,
    /// v3: send AVAILABLE on the session's connection.
    Probe,
    /// v1: ask GET_PROFILE again.
    Poll,
    /// The target is silent past the silence limit.
    Silent,
    /// The liveness probe was not answered.
    ProbeUnanswered,
    /// The attempt ran past its hard limit.
    TooLong,
}

/// The clocks of one running task-set.
#[derive(Debug)]
struct Watch {
    silence: Duration,
    liveness: Duration,
    reply: Duration,
    poll: Option<Duration>,
    probes: bool,
    last_event: Instant,
    last_life: Instant,
    /// START blocks the server for the sum of all offsets: an echo may wait that long.
    start_block_end: Instant,
    probe_deadline: Option<Instant>,
    next_poll: Instant,
    hard: Instant,
}

impl Watch {
    fn new(set: &TaskSet, cfg: &SessionConfig, now: Instant) -> Watch {
        let poll = (!cfg.dialect.pushes_events()).then_some(cfg.poll_interval);
        Watch {
            silence: silence_limit(set, cfg),
            liveness: cfg.liveness_interval,
            reply: cfg.reply_timeout,
            poll,
            probes: cfg.dialect.has_available(),
            last_event: now,
            last_life: now,
            start_block_end: at(now, offsets_sum(set)),
            probe_deadline: None,
            next_poll: at(now, poll.unwrap_or(MAX_WAIT)),
            hard: at(now, attempt_limit(set, cfg)),
        }
    }

    fn on_events(&mut self, now: Instant) {
        self.last_event = now;
        self.last_life = now;
    }

    fn on_echo(&mut self, now: Instant) {
        self.probe_deadline = None;
        self.last_life = now;
    }

    fn on_probe_sent(&mut self, now: Instant) {
        self.probe_deadline = Some(at(now, self.reply).max(at(self.start_block_end, self.reply)));
    }

    fn on_poll_sent(&mut self, now: Instant) {
        if let Some(p) = self.poll {
            self.next_poll = at(now, p);
        }
    }

    /// When something is due next.
    fn wake(&self) -> Instant {
        let mut t = at(self.last_event, self.silence).min(self.hard);
        if self.probes {
            t = t.min(
                self.probe_deadline
                    .unwrap_or(at(self.last_life, self.liveness)),
            );
        }
        if self.poll.is_some() {
            t = t.min(self.next_poll);
        }
        t
    }

    /// What is due at `now`, most serious first.
    fn due(&self, now: Instant) -> Due {
        if now >= self.hard {
            Due::TooLong
        } else if now >= at(self.last_event, self.silence) {
            Due::Silent
        } else if self.probe_deadline.is_some_and(|pd| now >= pd) {
            Due::ProbeUnanswered
        } else if self.probes
            && self.probe_deadline.is_none()
            && now >= at(self.last_life, self.liveness)
        {
            Due::Probe
        } else if self.poll.is_some() && now >= self.next_poll {
            Due::Poll
        } else {
            Due::Nothing
        }
    }
}

/// How the end of a CLEAR's effects is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fence {
    /// v3: AVAILABLE after CLEAR; everything before the echo is stale.
    Echo,
    /// v1/v2: GET_LIVE after CLEAR; its `<live>` document cannot be mistaken for a profile
    /// push, and everything before it is stale.
    Live,
    /// A v1/v2 target that does not answer GET_LIVE: collect for `drain_window`.
    Window,
}

/// Which reply makes [`Session::process`] stop decoding, so that frames behind it stay
/// buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    GoSend,
    Echo,
    Live,
}

/// A client connection to one target, reusable for many task-sets in a row.
///
/// The session keeps the read buffer, the time-stamp unwrapper (time stamps are monotonic per
/// boot) and whatever the server pushed while the client waited for something else. After a
/// timeout, a lost connection or a protocol violation the session is broken: every later call
/// fails with [`TargetError::ConnectionLost`]; open a new one.
///
/// A reused session sends one CLEAR per task-set: the end of a task-set writes CLEAR (not
/// awaited), and the next task-set only sends the fence that tells its effects apart.
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
    /// AVAILABLE requests sent and echoes received on this connection.
    echo_asked: u64,
    echo_seen: u64,
    go_sends: u32,
    live: Option<Vec<LiveTask>>,
    /// GET_LIVE requests sent and live documents received on this connection.
    live_asked: u64,
    live_seen: u64,
    /// Whether the target answers GET_LIVE (v1/v2 fence); None until known.
    answers_live: Option<bool>,
    /// The target may hold tasks of ours: the next task-set must send CLEAR first.
    dirty: bool,
    /// Stale events seen on this connection.
    stale: u64,
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
            echo_asked: 0,
            echo_seen: 0,
            go_sends: 0,
            live: None,
            live_asked: 0,
            live_seen: 0,
            answers_live: None,
            dirty: true,
            stale: 0,
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

    /// Stale events (leftovers of earlier task-sets) seen on this connection so far.
    pub fn stale_events(&self) -> u64 {
        self.stale
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

    fn protocol<T>(&mut self, detail: String) -> Result<T, TargetError> {
        let addr = self.addr;
        self.fail(TargetError::Protocol { addr, detail })
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

    /// Decode what is buffered: profile frames become events in the inbox, live documents are
    /// kept, echoes and GO_SENDs are counted. `want_go_send` makes a `0x90` word a GO_SEND
    /// while none is pending. Decoding stops right after a reply of kind `stop`, so that
    /// frames behind a fence stay buffered.
    fn process(&mut self, want_go_send: bool, stop: Option<Reply>) -> Result<(), TargetError> {
        loop {
            let expect = if want_go_send && self.go_sends == 0 {
                Expect::GoSend
            } else {
                Expect::Frames
            };
            let decoded = frame::decode_server(&self.rbuf, expect, self.cfg.max_frame_bytes);
            let (used, reply) = match decoded {
                Ok(None) => return Ok(()),
                Err(e) => return self.protocol(format!("undecodable bytes from the target: {e}")),
                Ok(Some((ServerMsg::GoSend, n))) => {
                    self.go_sends += 1;
                    (n, Some(Reply::GoSend))
                }
                Ok(Some((ServerMsg::AvailableEcho, n))) => {
                    self.echo_seen += 1;
                    (n, Some(Reply::Echo))
                }
                Ok(Some((ServerMsg::Frame(doc), n))) if doc.starts_with(b"<live") => {
                    match xml::parse_live(doc) {
                        Ok(rows) => self.live = Some(rows),
                        Err(e) => return self.protocol(format!("bad live frame: {e}")),
                    }
                    self.live_seen += 1;
                    (n, Some(Reply::Live))
                }
                Ok(Some((ServerMsg::Frame(doc), n))) => {
                    if let Err(e) = xml::parse_profile_into(doc, &mut self.raw) {
                        let detail = format!("bad profile frame of {} bytes: {e}", doc.len());
                        return self.protocol(detail);
                    }
                    (n, None)
                }
            };
            self.rbuf.advance(used);
            if self.inbox.len() + self.raw.len() > MAX_PENDING_EVENTS {
                return self.protocol(format!(
                    "more than {MAX_PENDING_EVENTS} events arrived while the client waited for a reply"
                ));
            }
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
            if reply.is_some() && reply == stop {
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
    /// pushes while we write cannot deadlock us). Fails after `reply_timeout` without write
    /// progress (reads do not count: a target that pushes but stops reading is stuck), and
    /// stops reading once the read buffer holds more than a few frames.
    async fn flush(&mut self, during: &str) -> Result<(), TargetError> {
        let mut pos = 0;
        let mut deadline = at(Instant::now(), self.cfg.reply_timeout);
        let read_cap = self.cfg.max_frame_bytes.saturating_mul(4).max(1 << 20);
        while pos < self.wbuf.len() {
            if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 && self.rbuf.len() < read_cap {
                self.rbuf.reserve(64 * 1024);
            }
            let room = self.rbuf.len() < read_cap;
            let (mut rd, mut wr) = self.stream.split();
            let step = timeout_at(deadline, async {
                tokio::select! {
                    w = wr.write(&self.wbuf[pos..]) => w.map(|n| (n, 0)),
                    r = rd.read_buf(&mut self.rbuf), if room => r.map(|n| (0, n)).and_then(|(w, n)| {
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
                Ok(Ok((w, _))) => {
                    if w > 0 {
                        pos += w;
                        deadline = at(Instant::now(), self.cfg.reply_timeout);
                    }
                }
            }
        }
        self.wbuf.clear();
        Ok(())
    }

    /// Whether the awaited reply has come (and take it).
    fn take_reply(&mut self, what: Reply) -> bool {
        match what {
            Reply::GoSend if self.go_sends > 0 => self.go_sends -= 1,
            // Every AVAILABLE asked so far is answered: the last one is the awaited one, and
            // a leftover echo (a liveness probe of the previous task-set) cannot stand in.
            Reply::Echo if self.echo_seen >= self.echo_asked => {}
            Reply::Live if self.live_seen >= self.live_asked => {}
            _ => return false,
        }
        true
    }

    /// Wait for one reply until `deadline`, keeping pushed frames that arrive meanwhile as
    /// events. `Ok(false)` when the deadline passed first.
    async fn await_reply(
        &mut self,
        what: Reply,
        deadline: Instant,
        cancel: Option<&CancellationToken>,
    ) -> Result<bool, TargetError> {
        let during = match what {
            Reply::GoSend => "GO_SEND",
            Reply::Echo => "AVAILABLE echo",
            Reply::Live => "GET_LIVE document",
        };
        loop {
            if what == Reply::GoSend && self.go_sends == 0 && self.rbuf[..] == GO_SEND_WORD {
                // A 144-byte push whose length word came alone looks exactly like GO_SEND;
                // give its body a moment to follow before deciding.
                let grace = at(Instant::now(), GO_SEND_GRACE).min(deadline);
                self.fill(grace, during, cancel).await?;
            }
            self.process(what == Reply::GoSend, Some(what))?;
            if self.take_reply(what) {
                return Ok(true);
            }
            if !self.fill(deadline, during, cancel).await? {
                return Ok(false);
            }
        }
    }

    /// [`Session::await_reply`] within `reply_timeout`; a timeout is an error.
    async fn wait_reply(
        &mut self,
        what: Reply,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), TargetError> {
        let deadline = at(Instant::now(), self.cfg.reply_timeout);
        if self.await_reply(what, deadline, cancel).await? {
            return Ok(());
        }
        let waiting_for = match what {
            Reply::GoSend => "GO_SEND",
            Reply::Echo => "AVAILABLE echo",
            Reply::Live => "the GET_LIVE document that fences CLEAR",
        };
        let e = TargetError::Timeout {
            addr: self.addr,
            waiting_for: waiting_for.into(),
            after: self.cfg.reply_timeout,
        };
        self.fail(e)
    }

    /// Read frames until `deadline` (no error when it passes).
    async fn collect_until(
        &mut self,
        deadline: Instant,
        cancel: Option<&CancellationToken>,
    ) -> Result<(), TargetError> {
        loop {
            self.process(false, None)?;
            if !self.fill(deadline, "draining", cancel).await? {
                return self.process(false, None);
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
        self.push_available();
        self.flush("sending AVAILABLE").await?;
        self.wait_reply(Reply::Echo, None).await
    }

    /// Append AVAILABLE and count it as asked.
    fn push_available(&mut self) {
        frame::encode_command(&mut self.wbuf, Command::Available);
        self.echo_asked += 1;
    }

    /// Append the request whose reply marks the end of what was written before it (v3:
    /// AVAILABLE; v1: GET_PROFILE for the logged leftovers, then GET_LIVE; v2: GET_LIVE), and
    /// say which fence it is.
    fn push_fence(&mut self) -> Fence {
        if self.cfg.dialect.has_available() {
            self.push_available();
            return Fence::Echo;
        }
        if !self.cfg.dialect.pushes_events() {
            frame::encode_command(&mut self.wbuf, Command::GetProfile);
        }
        if self.answers_live == Some(false) {
            return Fence::Window;
        }
        frame::encode_command(&mut self.wbuf, Command::GetLive);
        self.live_asked += 1;
        Fence::Live
    }

    /// After the fence was flushed: wait for its reply (or the drain window) and take the
    /// events that came before it. A v1/v2 target that never answered GET_LIVE and does not
    /// answer within `reply_timeout` is taken to lack it: this wait counts as the drain, and
    /// later task-sets use `drain_window`.
    async fn finish_fence(
        &mut self,
        fence: Fence,
        cancel: Option<&CancellationToken>,
    ) -> Result<Vec<TimedEvent>, TargetError> {
        match fence {
            Fence::Echo => self.wait_reply(Reply::Echo, cancel).await?,
            Fence::Live if self.answers_live == Some(true) => {
                self.wait_reply(Reply::Live, cancel).await?
            }
            Fence::Live => {
                let deadline = at(Instant::now(), self.cfg.reply_timeout);
                let answered = self.await_reply(Reply::Live, deadline, cancel).await?;
                self.answers_live = Some(answered);
                if !answered {
                    self.live_seen = self.live_asked;
                    tracing::info!(addr = %self.addr, drain_ms = self.cfg.drain_window.as_millis() as u64,
                        "the target does not answer GET_LIVE: task-sets wait the drain window after CLEAR");
                }
            }
            Fence::Window => {
                let deadline = at(Instant::now(), self.cfg.drain_window);
                self.collect_until(deadline, cancel).await?;
            }
        }
        let drained = std::mem::take(&mut self.inbox);
        if !drained.is_empty() {
            tracing::debug!(addr = %self.addr, events = drained.len(), "stale events before the fence");
        }
        self.stale += drained.len() as u64;
        Ok(drained)
    }

    /// Send CLEAR (stop and delete all tasks) and wait for its fence: v3 sends AVAILABLE right
    /// after CLEAR and everything before the echo is the drain; v1/v2 send GET_LIVE, whose
    /// document cannot be mistaken for a push (v1 asks GET_PROFILE first, as it never pushes);
    /// a v1/v2 target that does not answer GET_LIVE is drained for `drain_window`. Returns the
    /// drained events.
    pub async fn clear(&mut self) -> Result<Vec<TimedEvent>, TargetError> {
        self.ensure_usable()?;
        frame::encode_command(&mut self.wbuf, Command::Clear);
        let fence = self.push_fence();
        self.flush("sending CLEAR").await?;
        self.dirty = false;
        self.finish_fence(fence, None).await
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
        let budget = event_budget(set);
        if budget > self.cfg.max_events {
            return Err(TargetError::Invalid {
                reason: format!(
                    "the task-set can produce {budget} events, more than the {} one attempt may hold (SessionConfig::max_events)",
                    self.cfg.max_events
                ),
            });
        }
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
        self.dirty = true;
        Ok(())
    }

    fn push_start(&mut self) {
        frame::encode_command(&mut self.wbuf, Command::Start);
        if !self.cfg.dialect.pushes_events() {
            frame::encode_command(&mut self.wbuf, Command::GetProfile);
        }
    }

    /// Send the load that is in the write buffer and the binaries of `plan`, one per GO_SEND.
    /// Not cancellable: a half-sent SEND_BINARIES cannot be taken back.
    async fn send_binaries(
        &mut self,
        plan: &Plan,
        sent: &mut HashSet<String>,
    ) -> Result<(), TargetError> {
        self.flush("sending SEND_DESCS and SEND_BINARIES").await?;
        for (name, image) in &plan.to_send {
            self.wait_reply(Reply::GoSend, None).await?;
            frame::encode_binary(&mut self.wbuf, name, image).map_err(|e| {
                TargetError::Invalid {
                    reason: e.to_string(),
                }
            })?;
            self.flush("sending a binary").await?;
            sent.insert(name.clone());
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
        self.send_binaries(&plan, sent).await
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
        self.process(false, None)?;
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
                self.process(false, None)?;
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
        self.live_asked += 1;
        self.flush("sending GET_LIVE").await?;
        let deadline = at(Instant::now(), self.cfg.reply_timeout);
        if !self.await_reply(Reply::Live, deadline, None).await? {
            // A late answer could later be taken for a fence's: fence with the window.
            self.answers_live = Some(false);
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
        match self.flush("sending STOP and CLEAR").await {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::debug!(addr = %self.addr, error = %e, "STOP/CLEAR after failure failed")
            }
        }
    }

    /// Run one task-set on this connection: CLEAR (first task-set only), the fence,
    /// [OPTIMIZE (v1)], SEND_DESCS, SEND_BINARIES (only names not in `sent`, which it updates),
    /// START, events until every
    /// task sent JOBS_DONE, then CLEAR (written, not awaited: the next task-set's fence takes
    /// its effects). So a reused session pays one CLEAR per task-set.
    ///
    /// The first task-set of a connection starts with CLEAR, since the target may hold
    /// anything. The fence is AVAILABLE on v3 and GET_LIVE on v1/v2 (see [`Session::clear`]);
    /// with nothing new to send, everything from CLEAR to START goes out in one write. Events
    /// before START was written are stale (returned in [`TasksetRun::drained`], never
    /// counted); so are job endings that come before any job of the task-set began.
    ///
    /// While waiting for events, the silence limit is [`silence_limit`] and the whole run must
    /// end within [`attempt_limit`]; v3 also sends AVAILABLE after each `liveness_interval`
    /// without a frame and fails if the echo does not come within `reply_timeout`. v1 polls
    /// GET_PROFILE.
    ///
    /// Live events go to `on_events` as they arrive; all are returned too. Errors:
    /// [`TargetError::TargetFault`] on EXIT_ERROR, an event for a task that is not in the
    /// set, more STARTs or job endings than `numberofjobs`, a second JOBS_DONE, more events
    /// than the set can produce ([`event_budget`]), or a job count that differs from
    /// `numberofjobs` at the end; [`TargetError::Timeout`] on silence or when the hard limit
    /// passes; on cancellation STOP and CLEAR are sent and [`TargetError::Cancelled`] is
    /// returned.
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
        if self.dirty {
            frame::encode_command(&mut self.wbuf, Command::Clear);
        }
        let fence = self.push_fence();
        // START goes out with the fence only when the fence is sure to come: a time window
        // (or a GET_LIVE the target may not answer) is no fence for events of a START
        // written before it ends.
        let sure = match fence {
            Fence::Echo => true,
            Fence::Live => self.answers_live == Some(true),
            Fence::Window => false,
        };
        let pipelined = plan.to_send.is_empty() && sure;
        if pipelined {
            self.push_load(admission, 0)?;
            self.push_start();
        }
        self.flush("sending CLEAR").await?;
        let mut drained = self.finish_fence(fence, Some(cancel)).await?;
        if !pipelined {
            self.push_load(admission, plan.to_send.len())?;
            // Not cancellable midway: a half-sent SEND_BINARIES cannot be taken back without
            // corrupting the stream; each step is bounded by `reply_timeout`.
            self.send_binaries(&plan, sent).await?;
            // Whatever came while loading cannot belong to a task-set not yet started.
            self.stale += self.inbox.len() as u64;
            drained.append(&mut self.inbox);
            if cancel.is_cancelled() {
                return Err(TargetError::Cancelled);
            }
            self.push_start();
            self.flush("sending START").await?;
        }
        let binaries_sent = plan.to_send.iter().map(|(n, _)| n.clone()).collect();
        let (events, counts) = self
            .collect_run(set, &mut drained, on_events, cancel)
            .await?;
        frame::encode_command(&mut self.wbuf, Command::Clear);
        match self.flush("sending CLEAR").await {
            Ok(()) => self.dirty = false,
            // Every JOBS_DONE is in: the task-set is done; only the session is lost.
            Err(e) => {
                tracing::debug!(addr = %self.addr, error = %e, "CLEAR after a finished task-set failed")
            }
        }
        Ok(TasksetRun {
            events,
            drained,
            counts,
            binaries_sent,
            started_at,
            finished_at: SystemTime::now(),
        })
    }

    /// Send the request a [`Due`] asks for.
    async fn send_due(&mut self, due: &Due, watch: &mut Watch) -> Result<(), TargetError> {
        match due {
            Due::Probe => {
                self.push_available();
                self.flush("sending AVAILABLE").await?;
                watch.on_probe_sent(Instant::now());
            }
            Due::Poll => {
                frame::encode_command(&mut self.wbuf, Command::GetProfile);
                self.flush("sending GET_PROFILE").await?;
                watch.on_poll_sent(Instant::now());
            }
            _ => {}
        }
        Ok(())
    }

    /// Read events from START until every task sent JOBS_DONE, within the limits of
    /// [`Tally`] and [`Watch`]. Stale events go to `stale`.
    async fn collect_run(
        &mut self,
        set: &TaskSet,
        stale: &mut Vec<TimedEvent>,
        on_events: &mut (dyn FnMut(&[TimedEvent]) + Send),
        cancel: &CancellationToken,
    ) -> Result<(Vec<TimedEvent>, Vec<TaskCount>), TargetError> {
        let mut tally = Tally::new(set);
        let mut watch = Watch::new(set, &self.cfg, Instant::now());
        let mut events: Vec<TimedEvent> = Vec::new();
        let mut fresh: Vec<TimedEvent> = Vec::new();
        let mut stale_here: u64 = 0;
        loop {
            self.process(false, None)?;
            let now = Instant::now();
            if self.echo_seen >= self.echo_asked && watch.probe_deadline.is_some() {
                watch.on_echo(now);
            }
            if !self.inbox.is_empty() {
                let mut fault = None;
                for ev in self.inbox.drain(..) {
                    match tally.take(&ev.event) {
                        Ok(Verdict::Counted) => fresh.push(ev),
                        Ok(Verdict::Stale) if stale_here < MAX_STALE_EVENTS => {
                            tracing::debug!(addr = %self.addr, task = ev.event.task_id, kind = %ev.event.kind,
                                "stale event before the task-set began");
                            self.stale += 1;
                            stale_here += 1;
                            stale.push(ev);
                        }
                        Ok(Verdict::Stale) => {
                            fault = Some(format!(
                                "more than {MAX_STALE_EVENTS} stale events before the task-set began"
                            ));
                            break;
                        }
                        Err(reason) => {
                            fault = Some(reason);
                            break;
                        }
                    }
                }
                self.inbox.clear();
                if !fresh.is_empty() {
                    // Only events of this task-set are signs of life of its run.
                    watch.on_events(now);
                    on_events(&fresh);
                    events.append(&mut fresh);
                }
                if let Some(reason) = fault {
                    return Err(TargetError::TargetFault {
                        addr: self.addr,
                        reason,
                    });
                }
                if tally.finished() {
                    break;
                }
                if watch.poll.is_some() {
                    self.send_due(&Due::Poll, &mut watch).await?;
                }
            }
            if self
                .fill(watch.wake(), "waiting for job events", Some(cancel))
                .await?
            {
                continue;
            }
            let due = watch.due(Instant::now());
            let (waiting_for, after) = match due {
                Due::Nothing => continue,
                Due::Probe | Due::Poll => {
                    self.send_due(&due, &mut watch).await?;
                    continue;
                }
                Due::Silent => (
                    format!(
                        "job events ({} of {} tasks not done)",
                        tally.remaining,
                        tally.counts.len()
                    ),
                    watch.silence,
                ),
                Due::ProbeUnanswered => {
                    ("AVAILABLE echo during a run".into(), self.cfg.reply_timeout)
                }
                Due::TooLong => (
                    format!(
                        "the task-set to finish within its limit ({} of {} tasks not done)",
                        tally.remaining,
                        tally.counts.len()
                    ),
                    attempt_limit(set, &self.cfg),
                ),
            };
            let e = TargetError::Timeout {
                addr: self.addr,
                waiting_for,
                after,
            };
            return self.fail(e);
        }
        if let Err(reason) = tally.check_complete() {
            return Err(TargetError::TargetFault {
                addr: self.addr,
                reason,
            });
        }
        Ok((events, tally.counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskdist_tasksets::Task;

    fn set(jobs: &[u32]) -> TaskSet {
        let tasks = jobs
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut t = Task::new(i as u32, "hey");
                t.numberofjobs = n;
                t.period_ms = 100;
                t
            })
            .collect();
        TaskSet::new(tasks).unwrap()
    }

    fn ev(kind: EventKind, task_id: u32) -> TargetEvent {
        TargetEvent {
            kind,
            task_id,
            time_ms: 0,
        }
    }

    #[test]
    fn endings_before_any_start_are_stale() {
        let mut t = Tally::new(&set(&[2]));
        assert_eq!(t.take(&ev(EventKind::ExitExternal, 0)), Ok(Verdict::Stale));
        assert_eq!(t.take(&ev(EventKind::JobsDone, 0)), Ok(Verdict::Stale));
        assert_eq!(t.take(&ev(EventKind::Start, 0)), Ok(Verdict::Counted));
        // after the first START an ending counts
        assert_eq!(t.take(&ev(EventKind::Exit, 0)), Ok(Verdict::Counted));
        assert_eq!(t.counts[0].ended, 1);
    }

    #[test]
    fn not_scheduled_begins_a_task_set() {
        let mut t = Tally::new(&set(&[1]));
        assert_eq!(
            t.take(&ev(EventKind::NotScheduled, 0)),
            Ok(Verdict::Counted)
        );
        assert_eq!(t.take(&ev(EventKind::JobsDone, 0)), Ok(Verdict::Counted));
        assert!(t.finished());
        assert!(t.check_complete().is_ok());
    }

    #[test]
    fn unknown_task_ids_fail() {
        let mut t = Tally::new(&set(&[1]));
        t.take(&ev(EventKind::Start, 0)).unwrap();
        let e = t.take(&ev(EventKind::Start, 99)).unwrap_err();
        assert!(e.contains("task 99, which is not in the task-set"), "{e}");
        let e = Tally::new(&set(&[1]))
            .take(&ev(EventKind::Start, u32::MAX))
            .unwrap_err();
        assert!(e.contains("4294967295"), "{e}");
    }

    #[test]
    fn too_many_starts_or_endings_fail() {
        let mut t = Tally::new(&set(&[2]));
        t.take(&ev(EventKind::Start, 0)).unwrap();
        t.take(&ev(EventKind::Start, 0)).unwrap();
        let e = t.take(&ev(EventKind::Start, 0)).unwrap_err();
        assert!(e.contains("started 3 jobs, numberofjobs is 2"), "{e}");

        let mut t = Tally::new(&set(&[1]));
        t.take(&ev(EventKind::Start, 0)).unwrap();
        t.take(&ev(EventKind::Exit, 0)).unwrap();
        let e = t.take(&ev(EventKind::ExitPeriod, 0)).unwrap_err();
        assert!(e.contains("ended 2 jobs, numberofjobs is 1"), "{e}");
    }

    #[test]
    fn second_jobs_done_and_exit_error_fail() {
        let mut t = Tally::new(&set(&[1, 1]));
        t.take(&ev(EventKind::Start, 0)).unwrap();
        t.take(&ev(EventKind::JobsDone, 0)).unwrap();
        assert!(t.take(&ev(EventKind::JobsDone, 0)).is_err());
        let mut t = Tally::new(&set(&[1]));
        t.take(&ev(EventKind::Start, 0)).unwrap();
        let e = t.take(&ev(EventKind::ExitError, 0)).unwrap_err();
        assert!(e.contains("EXIT_ERROR"), "{e}");
    }

    #[test]
    fn unknown_kinds_are_bounded() {
        let s = set(&[1]);
        let mut t = Tally::new(&s);
        t.take(&ev(EventKind::Start, 0)).unwrap();
        let mut n = 1;
        let err = loop {
            match t.take(&ev(EventKind::Other("NOISE".into()), 0)) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(n, event_budget(&s));
        assert!(
            err.contains("more events than the task-set can produce"),
            "{err}"
        );
    }

    #[test]
    fn limits_follow_the_task_set() {
        let cfg = SessionConfig {
            silence_margin: Duration::from_secs(1),
            ..SessionConfig::default()
        };
        let mut s = set(&[3, 1]);
        s.tasks[0].offset_ms = 50;
        s.tasks[1].offset_ms = 70;
        s.tasks[1].period_ms = 500;
        // offsets 120 + max(7 * 100, 3 * 500) + 1000
        assert_eq!(
            attempt_limit(&s, &cfg),
            Duration::from_millis(120 + 1500 + 1000)
        );
        assert_eq!(event_budget(&s), 7 + 3 + EVENT_SLACK);
        s.tasks[0].numberofjobs = u32::MAX;
        s.tasks[0].period_ms = u64::MAX;
        assert!(attempt_limit(&s, &cfg) >= Duration::from_secs(1));
    }

    #[test]
    fn watch_orders_what_is_due() {
        let cfg = SessionConfig {
            silence_margin: Duration::ZERO,
            liveness_interval: Duration::from_millis(50),
            reply_timeout: Duration::from_millis(30),
            ..SessionConfig::default()
        };
        let s = set(&[1]);
        let t0 = Instant::now();
        let mut w = Watch::new(&s, &cfg, t0);
        assert_eq!(w.due(t0), Due::Nothing);
        assert_eq!(w.due(t0 + Duration::from_millis(60)), Due::Probe);
        w.on_probe_sent(t0 + Duration::from_millis(60));
        assert_eq!(w.due(t0 + Duration::from_millis(95)), Due::ProbeUnanswered);
        w.on_echo(t0 + Duration::from_millis(95));
        // silence limit = 2 periods = 200 ms, before the hard limit of 3 periods
        assert_eq!(w.due(t0 + Duration::from_millis(200)), Due::Silent);
        assert_eq!(w.due(t0 + Duration::from_millis(300)), Due::TooLong);
        assert!(w.wake() <= t0 + Duration::from_millis(200));
    }
}
