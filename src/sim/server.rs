//! One simulated host: its state across connections and the protocol server loop.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskdist_handlers::EventKind;
use taskdist_tasksets::{AdmissionControl, Task};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::fault::{FaultKind, RunView};
use super::sched::{self, SchedEvent, SimTask};
use super::{HostStats, SimConfig, Speed};
use crate::protocol::frame::{self, ClientMsg, Command};
use crate::protocol::xml;
use crate::protocol::Dialect;
use crate::time::{at, MAX_WAIT as MAX_SPAN};

/// Size announced by the oversized-frame fault.
const OVERSIZED_FRAME_BYTES: u32 = 64 << 20;

/// A span of `secs` seconds, capped at [`MAX_SPAN`] (NaN and negative give zero).
fn span(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs)
        .map_or(if secs > 0.0 { MAX_SPAN } else { Duration::ZERO }, |d| {
            d.min(MAX_SPAN)
        })
}

/// One event in the host's log (not yet sent).
#[derive(Debug, Clone)]
struct LogEvent {
    time_us: u64,
    task_id: u32,
    kind: EventKind,
}

enum Clock {
    Virtual { now_us: u64 },
    Real { boot: Instant, factor: f64 },
}

impl Clock {
    fn new(speed: Speed) -> Clock {
        match speed {
            Speed::AsFastAsPossible => Clock::Virtual { now_us: 0 },
            Speed::RealTime => Clock::Real {
                boot: Instant::now(),
                factor: 1.0,
            },
            Speed::Factor(f) => Clock::Real {
                boot: Instant::now(),
                factor: if f.is_finite() && f > 0.0 { f } else { 1.0 },
            },
        }
    }

    fn now_us(&self) -> u64 {
        match self {
            Clock::Virtual { now_us } => *now_us,
            Clock::Real { boot, factor } => (boot.elapsed().as_secs_f64() * factor * 1e6) as u64,
        }
    }

    /// Real instant at which virtual time `us` is reached (None for the virtual clock).
    fn instant_of(&self, us: u64) -> Option<Instant> {
        match self {
            Clock::Virtual { .. } => None,
            Clock::Real { boot, factor } => Some(at(*boot, span(us as f64 / factor / 1e6))),
        }
    }

    /// Real duration of a virtual span (zero for the virtual clock).
    fn real_span(&self, virt: Duration) -> Duration {
        match self {
            Clock::Virtual { .. } => Duration::ZERO,
            Clock::Real { factor, .. } => span(virt.as_secs_f64() / factor),
        }
    }
}

/// State of one simulated host, kept across connections.
pub(crate) struct Host {
    index: usize,
    cfg: Arc<SimConfig>,
    stats: Arc<HostStats>,
    binaries: HashMap<String, usize>,
    tasks: Vec<Task>,
    admission: Option<AdmissionControl>,
    clock: Clock,
    runs: u64,
    /// Per binary that a fault plan filters on: STARTs whose task-set used it.
    pkg_runs: HashMap<String, u64>,
    rng: StdRng,
    /// Events due but not yet sent.
    log: Vec<LogEvent>,
    /// Future events (real-time modes), in time order.
    pending: VecDeque<SchedEvent>,
    /// Commands are not processed before this instant (CLEAR and START blocks).
    blocked_until: Option<Instant>,
}

struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    out: Vec<u8>,
    delayed: VecDeque<(Instant, Vec<u8>)>,
    delay: Duration,
    frozen: bool,
    close: bool,
    binaries_left: u32,
    drop_after: Option<usize>,
    /// The flood fault: push START events without end, ignore input.
    flood: bool,
}

impl Host {
    pub(crate) fn new(index: usize, cfg: Arc<SimConfig>, stats: Arc<HostStats>) -> Host {
        let seed = cfg
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(index as u64);
        Host {
            index,
            clock: Clock::new(cfg.speed),
            cfg,
            stats,
            binaries: HashMap::new(),
            tasks: Vec::new(),
            admission: None,
            runs: 0,
            pkg_runs: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            log: Vec::new(),
            pending: VecDeque::new(),
            blocked_until: None,
        }
    }

    /// Whether this host refuses connections (drawn once).
    pub(crate) fn refuses(&mut self) -> bool {
        self.cfg.faults.refuses(self.index, &mut self.rng)
    }

    /// Accept and serve one client at a time until cancelled.
    pub(crate) async fn run(mut self, listener: TcpListener, cancel: CancellationToken) {
        // Accept failures (e.g. out of file descriptors) back off exponentially up to
        // ACCEPT_BACKOFF_MAX and are logged once per streak, so they cannot flood the log.
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if !backoff.is_zero() {
                        tracing::info!(host = self.index, "accepting connections again");
                        backoff = Duration::ZERO;
                    }
                    tracing::debug!(host = self.index, %peer, "client connected");
                    self.stats.connections.fetch_add(1, Ordering::Relaxed);
                    self.serve(stream, &cancel).await;
                    tracing::debug!(host = self.index, %peer, "client gone");
                }
                Err(e) => {
                    if backoff.is_zero() {
                        tracing::warn!(host = self.index, error = %e, "accept failed; backing off");
                    } else {
                        tracing::debug!(host = self.index, error = %e, "accept failed");
                    }
                    backoff = next_accept_backoff(backoff);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    async fn serve(&mut self, stream: TcpStream, cancel: &CancellationToken) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let mut c = Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            out: Vec::with_capacity(64 * 1024),
            delayed: VecDeque::new(),
            delay: Duration::ZERO,
            frozen: false,
            close: false,
            binaries_left: 0,
            drop_after: None,
            flood: false,
        };
        if self.cfg.faults.slow_at_connect(self.index, self.runs) {
            c.delay = self.cfg.faults.slow_delay;
        }
        loop {
            if c.flood {
                c.rbuf.clear();
                let now_ms = self.clock.now_us() / 1000;
                let flood: Vec<LogEvent> = (0..256)
                    .map(|_| LogEvent {
                        time_us: now_ms * 1000,
                        task_id: 0,
                        kind: EventKind::Start,
                    })
                    .collect();
                write_profile_frame(&mut c.out, &flood, false);
            } else if !c.frozen {
                if let Err(reason) = self.handle_input(&mut c) {
                    tracing::warn!(host = self.index, %reason, "closing connection");
                    return;
                }
            } else {
                c.rbuf.clear();
            }
            self.release_due(&mut c);
            if !self.write_out(&mut c).await {
                return;
            }
            if c.close && c.delayed.is_empty() {
                let _ = c.stream.shutdown().await;
                return;
            }
            let mut wake: Option<Instant> = None;
            let mut at = |i: Option<Instant>| {
                if let Some(i) = i {
                    wake = Some(wake.map_or(i, |w: Instant| w.min(i)));
                }
            };
            if c.flood {
                // Bounded by the client: write_out waits while its socket buffer is full.
                at(Some(Instant::now()));
            }
            if !c.frozen {
                at(self
                    .pending
                    .front()
                    .and_then(|e| self.clock.instant_of(e.time_us)));
                at(self.blocked_until);
            }
            at(c.delayed.front().map(|d| d.0));
            if c.rbuf.capacity() - c.rbuf.len() < 16 * 1024 {
                c.rbuf.reserve(64 * 1024);
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = c.stream.read_buf(&mut c.rbuf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
    }

    /// Write what is due; false if the connection broke.
    async fn write_out(&mut self, c: &mut Conn) -> bool {
        if !c.out.is_empty() {
            if c.frozen {
                c.out.clear();
            } else if c.delay.is_zero() {
                if c.stream.write_all(&c.out).await.is_err() {
                    return false;
                }
                c.out.clear();
            } else {
                let due = at(Instant::now(), c.delay);
                c.delayed.push_back((due, std::mem::take(&mut c.out)));
            }
        }
        let now = Instant::now();
        while c.delayed.front().is_some_and(|d| d.0 <= now) {
            if let Some((_, bytes)) = c.delayed.pop_front() {
                if c.stream.write_all(&bytes).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    fn dialect(&self) -> Dialect {
        self.cfg.dialect
    }

    /// Process every complete command in the read buffer (unless blocked).
    fn handle_input(&mut self, c: &mut Conn) -> Result<(), String> {
        loop {
            if c.close {
                c.rbuf.clear();
                return Ok(());
            }
            if let Some(b) = self.blocked_until {
                if Instant::now() < b {
                    return Ok(());
                }
                self.blocked_until = None;
            }
            if c.binaries_left > 0 {
                let got = frame::decode_binary(&c.rbuf, self.cfg.max_binary_bytes)
                    .map_err(|e| e.to_string())?;
                let Some((bin, used)) = got else {
                    return Ok(());
                };
                let name = String::from_utf8_lossy(bin.name).into_owned();
                let size = bin.image.len();
                c.rbuf.advance(used);
                self.stats.binaries_received.fetch_add(1, Ordering::Relaxed);
                // A second binary with the same name is ignored: the first image stays.
                self.binaries.entry(name).or_insert(size);
                c.binaries_left -= 1;
                if c.binaries_left > 0 {
                    frame::encode_command(&mut c.out, Command::GoSend);
                }
                continue;
            }
            let Some(word) = c
                .rbuf
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            else {
                return Ok(());
            };
            let lacks = match Command::from_word(word) {
                Some(Command::Optimize) => self.dialect() != Dialect::V1,
                Some(Command::Available) => self.dialect() != Dialect::V3,
                Some(Command::GoSend) => true,
                _ => false,
            };
            if lacks {
                tracing::info!(
                    host = self.index,
                    word = format_args!("{word:#010x}"),
                    "unknown command word"
                );
                c.rbuf.advance(4);
                continue;
            }
            enum Action {
                Plain(Command),
                Descs(Result<Vec<Task>, xml::XmlError>),
                Optimize(Result<AdmissionControl, xml::XmlError>),
                Binaries(u32),
                Unknown(u32),
            }
            let (action, used) = match frame::decode_client(
                &c.rbuf,
                self.cfg.max_payload_bytes,
                self.cfg.max_binaries,
            )
            .map_err(|e| e.to_string())?
            {
                None => return Ok(()),
                Some((msg, used)) => {
                    let a = match msg {
                        ClientMsg::Plain(cmd) => Action::Plain(cmd),
                        ClientMsg::SendDescs(x) => Action::Descs(xml::parse_taskset(x)),
                        ClientMsg::Optimize(x) => Action::Optimize(xml::parse_optimize(x)),
                        ClientMsg::SendBinaries(n) => Action::Binaries(n),
                        ClientMsg::Unknown(w) => Action::Unknown(w),
                    };
                    (a, used)
                }
            };
            c.rbuf.advance(used);
            self.stats.commands.fetch_add(1, Ordering::Relaxed);
            match action {
                Action::Plain(Command::Clear) => {
                    self.stop_jobs(c);
                    self.tasks.clear();
                    self.admission = None;
                    let block = self.clock.real_span(self.cfg.clear_block);
                    if !block.is_zero() {
                        self.blocked_until = Some(at(Instant::now(), block));
                    }
                }
                Action::Plain(Command::Stop) => self.stop_jobs(c),
                Action::Plain(Command::Start) => self.start(c),
                Action::Plain(Command::GetProfile) => {
                    let due = self.clock.now_us();
                    self.move_due(due);
                    self.push_log(c);
                }
                Action::Plain(Command::GetLive) => self.push_live(c),
                Action::Plain(Command::Reboot) => {
                    self.reboot();
                    c.close = true;
                }
                Action::Plain(Command::Available) => {
                    frame::encode_command(&mut c.out, Command::Available)
                }
                Action::Plain(other) => {
                    tracing::info!(host = self.index, command = %other, "ignored command");
                }
                Action::Descs(Ok(mut tasks)) => {
                    self.tasks.append(&mut tasks);
                    if self.cfg.faults.stale_push(
                        self.index,
                        &RunView {
                            run: self.runs,
                            tasks: &self.tasks,
                            pkg_runs: &self.pkg_runs,
                        },
                        &mut self.rng,
                    ) {
                        tracing::info!(
                            host = self.index,
                            run = self.runs,
                            "injecting a stale push"
                        );
                        let now_us = self.clock.now_us();
                        let leftover = [LogEvent {
                            time_us: now_us,
                            task_id: 0,
                            kind: EventKind::ExitExternal,
                        }];
                        write_profile_frame(&mut c.out, &leftover, self.cfg.wrap_time_stamps);
                    }
                }
                Action::Descs(Err(e)) => {
                    tracing::warn!(host = self.index, error = %e, "task-set document rejected")
                }
                Action::Optimize(Ok(ac)) => self.admission = Some(ac),
                Action::Optimize(Err(e)) => {
                    tracing::warn!(host = self.index, error = %e, "optimize document rejected")
                }
                Action::Binaries(n) => {
                    if n > 0 {
                        c.binaries_left = n;
                        frame::encode_command(&mut c.out, Command::GoSend);
                    }
                }
                Action::Unknown(w) => {
                    tracing::info!(
                        host = self.index,
                        word = format_args!("{w:#010x}"),
                        "unknown command word"
                    )
                }
            }
        }
    }

    fn reboot(&mut self) {
        self.binaries.clear();
        self.tasks.clear();
        self.admission = None;
        self.log.clear();
        self.pending.clear();
        self.blocked_until = None;
        self.clock = Clock::new(self.cfg.speed);
        self.stats.reboots.fetch_add(1, Ordering::Relaxed);
    }

    /// Move pending events due at `now_us` into the log; true if one of them ends a job.
    fn move_due(&mut self, now_us: u64) -> bool {
        let mut exit = false;
        while self.pending.front().is_some_and(|e| e.time_us <= now_us) {
            if let Some(e) = self.pending.pop_front() {
                exit |= e.kind.ends_job() || e.kind == EventKind::JobsDone;
                self.log.push(LogEvent {
                    time_us: e.time_us,
                    task_id: e.task_id,
                    kind: e.kind,
                });
            }
        }
        exit
    }

    /// Real-time modes: move due events to the log and push after job exits.
    fn release_due(&mut self, c: &mut Conn) {
        if self.pending.is_empty() || c.frozen {
            return;
        }
        let now = self.clock.now_us();
        if self.move_due(now) && self.dialect().pushes_events() {
            self.push_log(c);
        }
    }

    /// STOP: running jobs end with EXIT_EXTERNAL, future events are dropped.
    fn stop_jobs(&mut self, c: &mut Conn) {
        let now = self.clock.now_us();
        self.move_due(now);
        for e in std::mem::take(&mut self.pending) {
            if e.kind.ends_job() && e.kind != EventKind::NotScheduled && e.release_us <= now {
                self.log.push(LogEvent {
                    time_us: now,
                    task_id: e.task_id,
                    kind: EventKind::ExitExternal,
                });
            }
        }
        if self.dialect().pushes_events() && !self.log.is_empty() {
            self.push_log(c);
        }
    }

    fn sim_tasks(&self) -> Vec<SimTask> {
        let d = self.dialect();
        let cores = self.cfg.cores.max(1);
        self.tasks
            .iter()
            .map(|t| {
                let model = self.cfg.demand.model(&t.pkg);
                let fails_with = if !self.binaries.contains_key(&t.pkg) {
                    Some(EventKind::ExitError)
                } else if d == Dialect::V3 && t.caps == 0 {
                    Some(EventKind::OutOfCaps)
                } else if t.quota_bytes < model.ram_bytes {
                    Some(EventKind::OutOfQuota)
                } else {
                    None
                };
                let (priority, edf, core) = match d {
                    Dialect::V3 => {
                        let p = if t.priority > 127 { 0 } else { t.priority };
                        (p, None, t.coreoffset % cores)
                    }
                    Dialect::V2 => {
                        let edf = (t.deadline_ms > 0).then_some(t.deadline_ms * 1000);
                        (t.priority, edf, 0)
                    }
                    Dialect::V1 => {
                        let edf = (t.priority == 128).then(|| {
                            let d = if t.deadline_ms > 0 {
                                t.deadline_ms
                            } else {
                                t.period_ms
                            };
                            d * 1000
                        });
                        (t.priority, edf, 0)
                    }
                };
                SimTask {
                    id: t.id,
                    core,
                    priority,
                    edf_deadline_us: edf,
                    period_us: t.period_ms.max(1) * 1000,
                    offset_us: t.offset_ms * 1000,
                    jobs: t.numberofjobs,
                    critical_us: (t.criticaltime_ms > 0).then_some(t.criticaltime_ms * 1000),
                    demand_us: self.cfg.demand.demand_us(t),
                    fails_with,
                    admitted: true,
                }
            })
            .collect()
    }

    fn start(&mut self, c: &mut Conn) {
        let run = self.runs;
        self.runs += 1;
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        let view = RunView {
            run,
            tasks: &self.tasks,
            pkg_runs: &self.pkg_runs,
        };
        let faults = self.cfg.faults.draw(self.index, &view, &mut self.rng);
        self.cfg
            .faults
            .count_run(self.index, &self.tasks, &mut self.pkg_runs);
        if !faults.is_empty() {
            tracing::info!(host = self.index, run, ?faults, "injecting faults");
            self.stats
                .faults
                .fetch_add(faults.len() as u64, Ordering::Relaxed);
        }
        if faults.contains(&FaultKind::Reboot) {
            self.reboot();
            c.close = true;
            return;
        }
        let mut tasks = self.sim_tasks();
        if self.dialect() == Dialect::V1 && self.admission.is_some() {
            sched::admission_test(&mut tasks);
        }
        let start_us = self.clock.now_us();
        let Some(mut events) = sched::schedule(&tasks, start_us, self.cfg.max_jobs_per_run) else {
            tracing::warn!(
                host = self.index,
                max = self.cfg.max_jobs_per_run,
                "task-set has too many jobs; START ignored"
            );
            return;
        };
        if faults.contains(&FaultKind::ExitError) {
            let ends: Vec<usize> = (0..events.len())
                .filter(|&i| events[i].kind.ends_job() && events[i].kind != EventKind::NotScheduled)
                .collect();
            if !ends.is_empty() {
                let pick = ends[self.rng.gen_range(0..ends.len())];
                events[pick].kind = EventKind::ExitError;
            }
        }
        if faults.contains(&FaultKind::Runaway) {
            runaway(&mut events, &tasks);
        }
        if faults.contains(&FaultKind::Ghost) {
            let t = events.first().map_or(start_us, |e| e.time_us);
            for id in [99, u32::MAX] {
                for kind in [EventKind::Start, EventKind::Exit, EventKind::JobsDone] {
                    events.insert(
                        1.min(events.len()),
                        SchedEvent {
                            time_us: t,
                            release_us: t,
                            task_id: id,
                            kind,
                        },
                    );
                }
            }
        }
        if faults.contains(&FaultKind::Flood) {
            c.flood = true;
            return;
        }
        if faults.contains(&FaultKind::Slow) {
            c.delay = self.cfg.faults.slow_delay;
        }
        if faults.contains(&FaultKind::Garbage) {
            let len = self.rng.gen_range(16..200);
            let mut doc: Vec<u8> = (0..len)
                .map(|_| self.rng.gen_range(0x01..=0xFFu8))
                .collect();
            doc[0] = b'#';
            frame::encode_frame(&mut c.out, &doc);
        }
        if faults.contains(&FaultKind::Oversized) {
            frame::encode_u32(&mut c.out, OVERSIZED_FRAME_BYTES);
            c.out.extend_from_slice(b"<profile>\n\t<events>\n");
        }
        if faults.contains(&FaultKind::Freeze) {
            c.frozen = true;
            return;
        }
        if faults.contains(&FaultKind::Drop) {
            c.drop_after = Some(events.len().div_ceil(2));
        }
        let last = events.last().map_or(start_us, |e| e.time_us);
        match &mut self.clock {
            Clock::Virtual { now_us } => {
                self.log.extend(events.into_iter().map(|e| LogEvent {
                    time_us: e.time_us,
                    task_id: e.task_id,
                    kind: e.kind,
                }));
                *now_us = last.max(start_us) + 1000;
                if self.dialect().pushes_events() {
                    self.push_log(c);
                }
            }
            Clock::Real { .. } => {
                self.pending.extend(events);
                let offsets: u64 = self.tasks.iter().map(|t| t.offset_ms).sum();
                let block = self.clock.real_span(Duration::from_millis(offsets));
                if !block.is_zero() {
                    self.blocked_until = Some(at(Instant::now(), block));
                }
            }
        }
    }

    /// Send the log as profile frames (at most `max_frame_events` events each).
    fn push_log(&mut self, c: &mut Conn) {
        if self.log.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut self.log);
        if let Some(n) = c.drop_after {
            if events.len() >= n {
                events.truncate(n);
                c.close = true;
            }
            c.drop_after = Some(n - events.len());
        }
        let per = self.cfg.max_frame_events.max(1);
        for chunk in events.chunks(per) {
            write_profile_frame(&mut c.out, chunk, self.cfg.wrap_time_stamps);
            self.stats.frames.fetch_add(1, Ordering::Relaxed);
            self.stats
                .events
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }

    /// GET_LIVE: one row per monitored thread. As on a real target, the system's own
    /// components (dom0 and the Taskloader) are always listed, then one row per loaded task,
    /// so the document is never empty and v1/v2 clients can use it as a fence.
    fn push_live(&mut self, c: &mut Conn) {
        let mut doc = String::from("<live><task-descriptions>");
        for (thread, session) in [
            ("dom0", "init -&gt; dom0"),
            ("taskloader", "init -&gt; taskloader"),
        ] {
            let _ = write!(
                doc,
                "<task id=\"0\" execution-time=\"0\" priority=\"0\" core=\"0\" arrival-time=\"0\" start-time=\"0\" exit-time=\"0\" session=\"{session}\" thread=\"{thread}\" ram_quota=\"0\" ram_used=\"0\"/>"
            );
        }
        for (i, t) in self.tasks.iter().enumerate() {
            let _ = write!(
                doc,
                "<task id=\"{}\" execution-time=\"0\" priority=\"{}\" core=\"{}\" arrival-time=\"0\" start-time=\"0\" exit-time=\"0\" session=\"init -&gt; taskloader -&gt; {:02}.{}\" thread=\"{}\" ram_quota=\"{}\" ram_used=\"0\"/>",
                t.id,
                t.priority,
                t.coreoffset % self.cfg.cores.max(1),
                i,
                quick_xml::escape::escape(&t.pkg),
                quick_xml::escape::escape(&t.pkg),
                t.quota_bytes / 1024
            );
        }
        doc.push_str("</task-descriptions></live>");
        frame::encode_frame(&mut c.out, doc.as_bytes());
    }
}

/// Jobs a runaway task adds beyond its `numberofjobs`.
const RUNAWAY_JOBS: u64 = 10_000;

/// The runaway fault: task 0 never sends JOBS_DONE and keeps running one more job per
/// period after its last one.
fn runaway(events: &mut Vec<SchedEvent>, tasks: &[SimTask]) {
    let Some(t0) = tasks.first() else {
        return;
    };
    let id = t0.id;
    events.retain(|e| !(e.task_id == id && e.kind == EventKind::JobsDone));
    let last = events
        .iter()
        .filter(|e| e.task_id == id)
        .map(|e| e.time_us)
        .max()
        .unwrap_or(0);
    let period = t0.period_us.max(1);
    for k in 1..=RUNAWAY_JOBS {
        let t = last.saturating_add(period.saturating_mul(k));
        for kind in [EventKind::Start, EventKind::Exit] {
            events.push(SchedEvent {
                time_us: t,
                release_us: t,
                task_id: id,
                kind,
            });
        }
    }
    events.sort_by_key(|e| e.time_us);
}

/// Longest pause between accept attempts after failures.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The pause after one more failed accept: 10 ms, doubling up to [`ACCEPT_BACKOFF_MAX`].
fn next_accept_backoff(prev: Duration) -> Duration {
    if prev.is_zero() {
        Duration::from_millis(10)
    } else {
        prev.saturating_mul(2).min(ACCEPT_BACKOFF_MAX)
    }
}

/// Append one profile frame in the real server's layout.
fn write_profile_frame(out: &mut Vec<u8>, events: &[LogEvent], wrap: bool) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(b"<profile>\n\t<events>\n");
    let mut line = String::with_capacity(80);
    for e in events {
        let ms = if wrap {
            (e.time_us % (1u64 << 32)) / 1000
        } else {
            e.time_us / 1000
        };
        line.clear();
        let _ = writeln!(
            line,
            "\t\t<event type=\"{}\" task-id=\"{}\" time-stamp=\"{}\"/>",
            e.kind.as_wire(),
            e.task_id,
            ms
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"\t</events>\n</profile>\n\0");
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_up_to_its_cap() {
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            d = next_accept_backoff(d);
            seen.push(d.as_millis());
        }
        assert_eq!(&seen[..4], &[10, 20, 40, 80]);
        assert_eq!(*seen.last().unwrap(), ACCEPT_BACKOFF_MAX.as_millis());
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }
}
