//! Target lifecycle: targets the pool launches itself (QEMU instances, simulators), sized to
//! the work, and health checks that take a sick target out of service.
//!
//! A [`TargetGroup`](super::TargetGroup) with a [`LaunchSpec`] has no fixed hosts: the pool
//! runs its command once per instance (`{index}`, `{ip}` and `{port}` replaced), keeps
//! between [`LaunchSpec::min`] and [`LaunchSpec::max`] instances (one more while work is
//! queued and every instance is busy, one less after [`LaunchSpec::idle_stop`] without
//! work), restarts an instance whose target froze or failed, and stops all of them when the
//! pool shuts down.
//!
//! Nothing launched outlives the pool's process:
//! - on [`Pool::shutdown`](super::Pool::shutdown) (also after Ctrl-C in `taskdist run` and
//!   `taskdist serve`) each instance's process group gets [`LaunchSpec::stop_signal`], then
//!   `SIGKILL` after 5 s;
//! - if the pool is dropped without a shutdown, each instance's process group gets `SIGKILL`;
//! - if the process dies without either (`kill -9`, a crash), Linux sends `SIGKILL` to every
//!   launched process: each is started with `PR_SET_PDEATHSIG`, by one thread that lives as
//!   long as the process (the signal follows the death of the *thread* that forked). The
//!   command runs as `sh -c 'exec COMMAND'`, so the signal reaches the command itself; a
//!   command that forks helpers of its own must see to them (e.g. a script that `exec`s
//!   QEMU last).
//!
//! A [`HealthCheck`] names a small known task-set; a target runs it when it joins, after each
//! recovery, and every N task-sets or minutes. A target whose check fails takes no work, shows
//! state `unhealthy` with the reason, gets its recovery (a launched target is restarted, others
//! get the pool's recovery command) and is checked again with a growing delay. The check's
//! results go to no experiment: only the pool's metrics count them.

use std::collections::HashSet;
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use taskdist_handlers::EventKind;
use taskdist_tasksets::TaskSet;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::discovery::HostChange;
use crate::protocol::TasksetRun;

/// How the address of a launched instance is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressSource {
    /// Instance `i` answers on [`LaunchSpec::first_ip`] + `i`, at the group's port.
    #[default]
    Fixed,
    /// The command prints its address (`IP:PORT`, or an IP at the group's port) as the first
    /// word of a line on standard output.
    Stdout,
}

impl FromStr for AddressSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "fixed" => Ok(AddressSource::Fixed),
            "stdout" => Ok(AddressSource::Stdout),
            other => Err(format!(
                "address {other:?}: expected \"fixed\" (FIRST_IP + index) or \"stdout\" (printed by the command)"
            )),
        }
    }
}

/// A signal that stops a launched instance (`TERM`, `INT`, `HUP`, `QUIT`, `KILL`, `USR1`,
/// `USR2`; with or without `SIG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal(i32);

impl StopSignal {
    const NAMES: [(&'static str, i32); 7] = [
        ("TERM", libc::SIGTERM),
        ("INT", libc::SIGINT),
        ("HUP", libc::SIGHUP),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
    ];

    /// `SIGTERM`.
    pub const TERM: StopSignal = StopSignal(libc::SIGTERM);

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::TERM
    }
}

impl FromStr for StopSignal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        let name = up.strip_prefix("SIG").unwrap_or(&up);
        StopSignal::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| StopSignal(*v))
            .ok_or_else(|| {
                format!("stop signal {s:?}: expected TERM, INT, HUP, QUIT, KILL, USR1 or USR2")
            })
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match StopSignal::NAMES.iter().find(|(_, v)| *v == self.0) {
            Some((n, _)) => write!(f, "SIG{n}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// How a group's targets are launched (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LaunchSpec {
    /// Starts one target; `{index}` (0, 1, ...), `{ip}` ([`LaunchSpec::first_ip`] + index)
    /// and `{port}` (the group's port) are replaced. Run as `sh -c 'exec COMMAND'`.
    pub command: String,
    /// How an instance's address is known.
    pub address: AddressSource,
    /// Address of instance 0 (`{ip}`; with [`AddressSource::Fixed`] also where it answers).
    pub first_ip: IpAddr,
    /// Instances kept running even without work.
    pub min: usize,
    /// Most instances at once.
    pub max: usize,
    /// How long an instance may take to answer after its start before it counts as failed.
    pub boot_time: Duration,
    /// An instance beyond `min` without work for this long is stopped.
    pub idle_stop: Duration,
    /// Signal that asks an instance to stop (then `SIGKILL` after 5 s).
    pub stop_signal: StopSignal,
}

impl LaunchSpec {
    /// Launch `command`, keeping `min` to `max` instances, with fixed addresses from
    /// 127.0.0.2, 60 s to boot, idle instances stopped after 60 s, `SIGTERM` to stop.
    pub fn new(command: impl Into<String>, min: usize, max: usize) -> Self {
        LaunchSpec {
            command: command.into(),
            address: AddressSource::Fixed,
            first_ip: IpAddr::from([127, 0, 0, 2]),
            min,
            max,
            boot_time: Duration::from_secs(60),
            idle_stop: Duration::from_secs(60),
            stop_signal: StopSignal::TERM,
        }
    }

    /// Check the numbers; the message says what was expected.
    pub fn check(&self) -> Result<(), String> {
        if self.command.trim().is_empty() {
            return Err("launch command is empty".into());
        }
        if self.max == 0 || self.min > self.max || self.max > 250 {
            return Err(format!(
                "launch min {} / max {}: expected 0 <= min <= max, 1 <= max <= 250",
                self.min, self.max
            ));
        }
        if self.boot_time.is_zero() {
            return Err("launch boot time 0: expected a positive duration".into());
        }
        Ok(())
    }

    /// The IP of instance `index`.
    pub fn ip_of(&self, index: usize) -> Option<IpAddr> {
        match self.first_ip {
            IpAddr::V4(a) => u32::from(a)
                .checked_add(u32::try_from(index).ok()?)
                .map(|n| IpAddr::V4(n.into())),
            IpAddr::V6(a) => u128::from(a)
                .checked_add(index as u128)
                .map(|n| IpAddr::V6(n.into())),
        }
    }

    /// The command of instance `index` at `port`.
    pub fn command_of(&self, index: usize, port: u16) -> String {
        let ip = self.ip_of(index).map(|i| i.to_string()).unwrap_or_default();
        self.command
            .replace("{index}", &index.to_string())
            .replace("{ip}", &ip)
            .replace("{port}", &port.to_string())
    }
}

/// A group's health check (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// The known task-set: a catalog name or a spec file.
    pub spec: String,
    /// How many of its variants (from the first) one check runs.
    pub variants: u64,
    /// Check again after this many task-sets.
    pub every: Option<u64>,
    /// Check again after this long.
    pub every_time: Option<Duration>,
    /// Healthy only if every job's response time (start to end) is at most this.
    pub max_response: Option<Duration>,
    /// Directory with the binaries its tasks name (default: synthetic images, which only
    /// simulated targets accept).
    pub binaries: Option<PathBuf>,
    /// Delay before the first re-check of a failed target; it doubles, up to 5 minutes.
    pub backoff: Duration,
}

impl HealthCheck {
    /// Run one variant of `spec`, at joins and recoveries only, re-checked after 5 s, 10 s, ...
    pub fn new(spec: impl Into<String>) -> Self {
        HealthCheck {
            spec: spec.into(),
            variants: 1,
            every: None,
            every_time: None,
            max_response: None,
            binaries: None,
            backoff: Duration::from_secs(5),
        }
    }
}

/// Launched instances and health checks of a pool, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LifecycleStats {
    /// Instances started (restarts included).
    pub launched: u64,
    /// Instances running now (booting or up).
    pub running: u64,
    /// Most instances running at once.
    pub peak: u64,
    /// Instances stopped by the pool (idle, or at shutdown).
    pub stopped: u64,
    /// Of these, stopped for lack of work.
    pub idle_stopped: u64,
    /// Instances that exited by themselves, did not boot in time, or could not start.
    pub failed: u64,
    /// Instances restarted because their target froze, failed or was unhealthy.
    pub restarted: u64,
    /// Health checks passed.
    pub health_passed: u64,
    /// Health checks failed.
    pub health_failed: u64,
}

/// The pool's lifecycle counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    launched: AtomicU64,
    running: AtomicU64,
    peak: AtomicU64,
    stopped: AtomicU64,
    idle_stopped: AtomicU64,
    failed: AtomicU64,
    restarted: AtomicU64,
    pub health_passed: AtomicU64,
    pub health_failed: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> LifecycleStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LifecycleStats {
            launched: l(&self.launched),
            running: l(&self.running),
            peak: l(&self.peak),
            stopped: l(&self.stopped),
            idle_stopped: l(&self.idle_stopped),
            failed: l(&self.failed),
            restarted: l(&self.restarted),
            health_passed: l(&self.health_passed),
            health_failed: l(&self.health_failed),
        }
    }

    fn started(&self) {
        self.launched.fetch_add(1, Ordering::Relaxed);
        let now = self.running.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn ended(&self) {
        let _ = self
            .running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Health verdicts

/// The health check's task-sets, loaded when the pool starts.
#[derive(Debug)]
pub(crate) struct HealthRt {
    pub spec: HealthCheck,
    pub sets: Vec<TaskSet>,
    pub binaries: crate::protocol::Binaries,
}

impl HealthRt {
    pub fn load(h: &HealthCheck) -> Result<HealthRt, String> {
        use crate::distributor::VariantSource;
        let spec = taskdist_tasksets::Spec::load(&h.spec)
            .map_err(|e| format!("health check spec {}: {e}", h.spec))?;
        let n = h.variants.max(1);
        let mut sets = Vec::new();
        for i in 0..n {
            if spec.variant_count().is_some_and(|c| i >= c) {
                break;
            }
            sets.push(
                spec.get(i)
                    .map_err(|e| format!("health check spec {} variant {i}: {e}", h.spec))?,
            );
        }
        if sets.is_empty() {
            return Err(format!("health check spec {}: no variant", h.spec));
        }
        let binaries = match &h.binaries {
            Some(d) => crate::protocol::Binaries::from_dir(d)
                .map_err(|e| format!("health check binaries: {e}"))?,
            None => crate::protocol::Binaries::synthetic(),
        };
        Ok(HealthRt {
            spec: h.clone(),
            sets,
            binaries,
        })
    }
}

/// Whether a health-check run is healthy: every job of every task started and ended and the
/// task reported JOBS_DONE, no job ended with EXIT_ERROR, no event names a task outside the
/// task-set, and (if bounded) every job's response time is within `max_response`. `Err`
/// says what was wrong.
pub(crate) fn judge(run: &TasksetRun, max_response: Option<Duration>) -> Result<(), String> {
    let ids: HashSet<u32> = run.counts.iter().map(|c| c.task_id).collect();
    for c in &run.counts {
        if !c.done || c.ended < c.expected_jobs || c.started < c.expected_jobs {
            return Err(format!(
                "task {}: {} of {} jobs started, {} ended{}",
                c.task_id,
                c.started,
                c.expected_jobs,
                c.ended,
                if c.done { "" } else { ", no JOBS_DONE" }
            ));
        }
    }
    let mut starts: std::collections::HashMap<u32, Vec<u64>> = Default::default();
    for e in &run.events {
        let ev = &e.event;
        if !ids.contains(&ev.task_id) {
            return Err(format!(
                "event {:?} of task {}, which is not in the task-set",
                ev.kind, ev.task_id
            ));
        }
        match &ev.kind {
            EventKind::ExitError => {
                return Err(format!("task {}: a job ended with EXIT_ERROR", ev.task_id))
            }
            EventKind::Start => starts.entry(ev.task_id).or_default().push(ev.time_ms),
            EventKind::JobsDone | EventKind::Other(_) => {}
            _ => {
                if let (Some(bound), Some(list)) = (max_response, starts.get_mut(&ev.task_id)) {
                    if !list.is_empty() {
                        let began = list.remove(0);
                        let took = Duration::from_millis(ev.time_ms.saturating_sub(began));
                        if took > bound {
                            return Err(format!(
                                "task {}: a job took {} ms, more than the bound of {} ms",
                                ev.task_id,
                                took.as_millis(),
                                bound.as_millis()
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Appends health-check results to a JSON Lines file (each write on a blocking thread, done
/// before the check's outcome takes effect).
#[derive(Debug, Clone)]
pub(crate) struct HealthLog {
    path: Arc<PathBuf>,
    file: Arc<Mutex<std::fs::File>>,
}

impl HealthLog {
    pub fn open(path: &std::path::Path) -> Result<HealthLog, String> {
        let fail = |e: std::io::Error| format!("health log {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        Ok(HealthLog {
            path: Arc::new(path.to_path_buf()),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// One check of `target`: passed (`reason` None) or failed.
    pub async fn record(&self, target: SocketAddr, group: &str, spec: &str, reason: Option<&str>) {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = serde_json::json!({
            "time_unix_s": time,
            "target": target.to_string(),
            "group": group,
            "spec": spec,
            "passed": reason.is_none(),
            "reason": reason,
        });
        let text = format!("{line}\n");
        let log = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = log.file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(text.as_bytes()).and_then(|()| f.flush())
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot write the health log");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Spawning

struct SpawnReq {
    cmd: std::process::Command,
    reply: oneshot::Sender<std::io::Result<std::process::Child>>,
}

/// The one thread that forks launched instances. It lives as long as the process, so the
/// children's parent-death signal fires only when the process dies.
fn spawner() -> &'static Mutex<std::sync::mpsc::Sender<SpawnReq>> {
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnReq>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnReq>();
        std::thread::Builder::new()
            .name("taskdist-launcher".into())
            .spawn(move || {
                // Never returns while the process lives: the sender is in a static.
                while let Ok(mut req) = rx.recv() {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .expect("cannot start the launcher thread");
        Mutex::new(tx)
    })
}

/// Start `text` via `sh -c 'exec TEXT'` in a process group of its own, with a parent-death
/// signal (Linux).
async fn spawn(text: &str, stdout: bool) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec {text}"))
        .stdin(std::process::Stdio::null())
        .stdout(if stdout {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the signal was armed.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let (reply, rx) = oneshot::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(SpawnReq { cmd, reply })
        .map_err(|_| std::io::Error::other("the launcher thread is gone"))?;
    rx.await
        .map_err(|_| std::io::Error::other("the launcher thread is gone"))?
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) on a process group we created; a gone group is ESRCH.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The launcher of one group

/// What the pool tells a group's launcher.
#[derive(Debug)]
pub(crate) enum LaunchMsg {
    /// The target at this address failed; restart its instance (`restart`) or let it rejoin,
    /// after `delay`.
    Failed {
        addr: SocketAddr,
        restart: bool,
        delay: Duration,
    },
}

/// A launched group's shared part: the addresses of its instances that are up.
#[derive(Debug)]
pub(crate) struct LaunchRt {
    pub spec: LaunchSpec,
    pub port: u16,
    owned: Mutex<HashSet<SocketAddr>>,
    pub tx: mpsc::UnboundedSender<LaunchMsg>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<LaunchMsg>>>,
}

impl LaunchRt {
    pub fn new(spec: LaunchSpec, port: u16) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        LaunchRt {
            spec,
            port,
            owned: Mutex::new(HashSet::new()),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `addr` is one of its instances.
    pub fn owns(&self, addr: SocketAddr) -> bool {
        self.owned().contains(&addr)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started (or waiting to rejoin): probed until it answers, from `not_before`.
    Booting { not_before: Instant },
    /// Answers; a worker serves it.
    Up,
    /// No process: started again at `at`.
    Waiting { at: Instant },
}

struct Instance {
    index: usize,
    child: Option<std::process::Child>,
    addr: Option<SocketAddr>,
    addr_rx: Option<oneshot::Receiver<SocketAddr>>,
    phase: Phase,
    started: Instant,
    idle_since: Option<Instant>,
}

impl Instance {
    fn pgid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Dropped without a stop (the pool was dropped): nothing launched may outlive it.
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                signal_group(c.id() as i32, libc::SIGKILL);
                let _ = c.wait();
            }
        }
    }
}

/// What the launcher needs from the pool.
pub(crate) struct PoolView {
    pub counters: Arc<Counters>,
    /// Variants queued for this group's targets.
    pub demand: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Whether the target at this address is at work (running or being checked).
    pub busy: Box<dyn Fn(SocketAddr) -> bool + Send + Sync>,
    /// Wake the workers (a target left).
    pub changed: Arc<tokio::sync::Notify>,
    pub up: mpsc::Sender<HostChange>,
}

const TICK: Duration = Duration::from_millis(200);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Keep the group's instances, until `cancel`; then stop them all.
pub(crate) async fn run_launcher(
    name: String,
    rt: Arc<LaunchRt>,
    view: PoolView,
    cancel: CancellationToken,
) {
    let Some(mut rx) = rt.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let mut instances: Vec<Instance> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(msg) = rx.recv() => match msg {
                LaunchMsg::Failed { addr, restart, delay } => {
                    // Only an instance up: a stale report must not hit its restarted successor.
                    let Some(i) = instances.iter().position(|x| x.addr == Some(addr) && x.phase == Phase::Up) else {
                        continue;
                    };
                    rt.owned().remove(&addr);
                    let inst = &mut instances[i];
                    if restart {
                        tracing::warn!(group = %name, index = inst.index, %addr, "restarting a launched target");
                        kill_now(inst, &view.counters);
                        view.counters.restarted.fetch_add(1, Ordering::Relaxed);
                        inst.phase = Phase::Waiting { at: Instant::now() + delay };
                    } else {
                        inst.phase = Phase::Booting { not_before: Instant::now() + delay.max(Duration::from_secs(1)) };
                        inst.started = Instant::now();
                    }
                }
            },
            _ = tick.tick() => {
                step(&name, &rt, &view, &mut instances).await;
            }
        }
    }
    // Stop everything: the stop signal, then SIGKILL after the grace.
    rt.owned().clear();
    for inst in &instances {
        signal_group(inst.pgid(), rt.spec.stop_signal.number());
    }
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        let mut alive = 0;
        for inst in &mut instances {
            if let Some(c) = &mut inst.child {
                match c.try_wait() {
                    Ok(None) => alive += 1,
                    _ => {
                        inst.child = None;
                        view.counters.stopped.fetch_add(1, Ordering::Relaxed);
                        view.counters.ended();
                    }
                }
            }
        }
        if alive == 0 {
            break;
        }
        if Instant::now() >= deadline {
            for inst in &mut instances {
                if let Some(mut c) = inst.child.take() {
                    tracing::warn!(group = %name, index = inst.index, "a launched target ignored {}; killed", rt.spec.stop_signal);
                    signal_group(c.id() as i32, libc::SIGKILL);
                    let _ = tokio::task::spawn_blocking(move || c.wait()).await;
                    view.counters.stopped.fetch_add(1, Ordering::Relaxed);
                    view.counters.ended();
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::debug!(group = %name, "launched targets stopped");
}

/// Kill an instance's process group at once (it froze or failed) and reap it.
fn kill_now(inst: &mut Instance, counters: &Counters) {
    if let Some(mut c) = inst.child.take() {
        signal_group(c.id() as i32, libc::SIGKILL);
        counters.ended();
        tokio::task::spawn_blocking(move || c.wait());
    }
    inst.addr_rx = None;
}

async fn start(name: &str, rt: &LaunchRt, counters: &Counters, inst: &mut Instance) {
    let spec = &rt.spec;
    let text = spec.command_of(inst.index, rt.port);
    let stdout = spec.address == AddressSource::Stdout;
    inst.started = Instant::now();
    inst.phase = Phase::Booting {
        not_before: Instant::now(),
    };
    inst.idle_since = None;
    match spawn(&text, stdout).await {
        Ok(mut child) => {
            counters.started();
            tracing::info!(group = %name, index = inst.index, pid = child.id(), command = %text, "launched a target");
            if stdout {
                inst.addr = None;
                let (tx, rx) = oneshot::channel();
                inst.addr_rx = Some(rx);
                if let Some(out) = child.stdout.take() {
                    let port = rt.port;
                    std::thread::spawn(move || read_address(out, port, tx));
                }
            } else {
                inst.addr = spec
                    .ip_of(inst.index)
                    .map(|ip| SocketAddr::new(ip, rt.port));
            }
            inst.child = Some(child);
        }
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(group = %name, index = inst.index, error = %e, command = %text, "cannot launch a target");
            inst.phase = Phase::Waiting {
                at: Instant::now() + Duration::from_secs(5),
            };
        }
    }
}

/// Read the command's standard output: the first word of a line that is an address is the
/// instance's; the rest is read and dropped (so the command never blocks on a full pipe). Lines
/// are read in pieces of at most 4 KiB, so output without line breaks takes no more memory;
/// only the start of a line can hold the address.
fn read_address(out: std::process::ChildStdout, port: u16, tx: oneshot::Sender<SocketAddr>) {
    use std::io::Read;
    let mut tx = Some(tx);
    let mut r = std::io::BufReader::new(out);
    let mut piece = Vec::with_capacity(4096);
    let mut line_start = true;
    loop {
        piece.clear();
        match (&mut r).take(4096).read_until(b'\n', &mut piece) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let starts = line_start;
        line_start = piece.last() == Some(&b'\n');
        let Some(t) = tx.take_if(|_| starts) else {
            continue;
        };
        let text = String::from_utf8_lossy(&piece);
        let word = text.split_whitespace().next().unwrap_or("");
        let addr = word.parse::<SocketAddr>().ok().or_else(|| {
            word.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, port))
        });
        match addr {
            Some(a) => {
                let _ = t.send(a);
            }
            None => tx = Some(t),
        }
    }
}

async fn answers(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// One round: reap, boot, restart, grow and shrink.
async fn step(name: &str, rt: &LaunchRt, view: &PoolView, instances: &mut Vec<Instance>) {
    let spec = &rt.spec;
    let now = Instant::now();
    // Instances that ended by themselves.
    for inst in instances.iter_mut() {
        let Some(c) = &mut inst.child else { continue };
        if let Ok(Some(status)) = c.try_wait() {
            tracing::warn!(group = %name, index = inst.index, %status, "a launched target exited");
            inst.child = None;
            view.counters.ended();
            view.counters.failed.fetch_add(1, Ordering::Relaxed);
            if let Some(a) = inst.addr {
                rt.owned().remove(&a);
            }
            inst.phase = Phase::Waiting {
                at: now + Duration::from_secs(1),
            };
        }
    }
    // Waiting instances are needed only up to `min`, or while there is work.
    let demand = (view.demand)();
    let mut i = 0;
    while i < instances.len() {
        if let Phase::Waiting { at } = instances[i].phase {
            let others = instances.len() - 1;
            if others >= spec.min && demand == 0 {
                instances.remove(i);
                continue;
            }
            if now >= at {
                start(name, rt, &view.counters, &mut instances[i]).await;
            }
        }
        i += 1;
    }
    // Booting instances: learn the address, probe, give up after the boot time.
    for inst in instances.iter_mut() {
        let Phase::Booting { not_before } = inst.phase else {
            continue;
        };
        if now < not_before {
            continue;
        }
        if inst.addr.is_none() {
            if let Some(rx) = &mut inst.addr_rx {
                if let Ok(a) = rx.try_recv() {
                    inst.addr = Some(a);
                    inst.addr_rx = None;
                }
            }
        }
        let up = match inst.addr {
            Some(a) => answers(a).await,
            None => false,
        };
        if up {
            let a = inst.addr.expect("checked");
            tracing::debug!(group = %name, index = inst.index, addr = %a, "launched target answers");
            inst.phase = Phase::Up;
            inst.idle_since = Some(Instant::now());
            rt.owned().insert(a);
            let _ = view.up.send(HostChange::Up(a)).await;
        } else if inst.started.elapsed() > spec.boot_time {
            tracing::warn!(group = %name, index = inst.index, boot_s = spec.boot_time.as_secs(), "a launched target did not answer in time; restarting it");
            kill_now(inst, &view.counters);
            view.counters.failed.fetch_add(1, Ordering::Relaxed);
            inst.phase = Phase::Waiting {
                at: Instant::now() + Duration::from_secs(1),
            };
        }
    }
    // Idle instances beyond `min` stop after the grace.
    let mut busy_all = true;
    let mut stop: Option<usize> = None;
    for (i, inst) in instances.iter_mut().enumerate() {
        if inst.phase != Phase::Up {
            continue;
        }
        let a = inst.addr.expect("an instance up has an address");
        if (view.busy)(a) {
            inst.idle_since = None;
        } else {
            busy_all = false;
            let since = *inst.idle_since.get_or_insert(now);
            if now.duration_since(since) >= spec.idle_stop && stop.is_none() {
                stop = Some(i);
            }
        }
    }
    if let Some(i) = stop {
        if instances.len() > spec.min {
            let mut inst = instances.remove(i);
            if let Some(a) = inst.addr {
                rt.owned().remove(&a);
            }
            view.changed.notify_waiters();
            tracing::info!(group = %name, index = inst.index, "stopping an idle launched target");
            signal_group(inst.pgid(), spec.stop_signal.number());
            view.counters.idle_stopped.fetch_add(1, Ordering::Relaxed);
            let counters = view.counters.clone();
            if let Some(mut c) = inst.child.take() {
                tokio::spawn(async move {
                    let deadline = Instant::now() + STOP_GRACE;
                    loop {
                        if !matches!(c.try_wait(), Ok(None)) {
                            break;
                        }
                        if Instant::now() >= deadline {
                            signal_group(c.id() as i32, libc::SIGKILL);
                            let _ = tokio::task::spawn_blocking(move || c.wait()).await;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    counters.stopped.fetch_add(1, Ordering::Relaxed);
                    counters.ended();
                });
            }
        }
    }
    // Keep `min`; add one while work waits, every instance is busy and none is booting.
    let booting = instances
        .iter()
        .any(|x| matches!(x.phase, Phase::Booting { .. }));
    let want_more = instances.len() < spec.min
        || (demand > 0 && busy_all && !booting && instances.len() < spec.max);
    if want_more {
        let used: HashSet<usize> = instances.iter().map(|x| x.index).collect();
        let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        let mut inst = Instance {
            index,
            child: None,
            addr: None,
            addr_rx: None,
            phase: Phase::Waiting { at: now },
            started: now,
            idle_since: None,
        };
        start(name, rt, &view.counters, &mut inst).await;
        instances.push(inst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address_printed_by(script: &str) -> Option<SocketAddr> {
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, mut rx) = oneshot::channel();
        read_address(child.stdout.take().unwrap(), 3001, tx);
        child.wait().unwrap();
        rx.try_recv().ok()
    }

    #[test]
    fn the_address_is_the_first_word_of_a_line_and_long_output_is_dropped() {
        assert_eq!(
            address_printed_by("echo booting; echo '127.0.0.5 up'"),
            Some("127.0.0.5:3001".parse().unwrap())
        );
        // 1 MB without a line break, an address inside it, then the address on a line.
        assert_eq!(
            address_printed_by(
                "head -c 1000000 /dev/zero | tr '\\0' x; printf ' 127.0.0.7:9 \\n127.0.0.8:4000\\n'"
            ),
            Some("127.0.0.8:4000".parse().unwrap())
        );
        assert_eq!(address_printed_by("echo no address here"), None);
    }
    use crate::protocol::TaskCount;
    use taskdist_handlers::{TargetEvent, TimedEvent};

    fn ev(kind: EventKind, task_id: u32, time_ms: u64) -> TimedEvent {
        TimedEvent {
            event: TargetEvent {
                kind,
                task_id,
                time_ms,
            },
            host_time: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    fn run(events: Vec<TimedEvent>, ended: u32, done: bool) -> TasksetRun {
        TasksetRun {
            events,
            drained: Vec::new(),
            counts: vec![TaskCount {
                task_id: 1,
                expected_jobs: 2,
                started: 2,
                ended,
                done,
            }],
            binaries_sent: Vec::new(),
            started_at: std::time::SystemTime::UNIX_EPOCH,
            finished_at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn health_verdicts() {
        use EventKind::*;
        let good = vec![
            ev(Start, 1, 0),
            ev(Exit, 1, 30),
            ev(Start, 1, 100),
            ev(Exit, 1, 150),
            ev(JobsDone, 1, 150),
        ];
        assert_eq!(judge(&run(good.clone(), 2, true), None), Ok(()));
        assert_eq!(
            judge(&run(good.clone(), 2, true), Some(Duration::from_millis(50))),
            Ok(())
        );
        let e = judge(&run(good.clone(), 2, true), Some(Duration::from_millis(40))).unwrap_err();
        assert!(e.contains("took 50 ms"), "{e}");
        let e = judge(&run(good.clone(), 1, true), None).unwrap_err();
        assert!(e.contains("1 ended"), "{e}");
        let e = judge(&run(good.clone(), 2, false), None).unwrap_err();
        assert!(e.contains("no JOBS_DONE"), "{e}");
        let mut bad = good.clone();
        bad[1] = ev(ExitError, 1, 30);
        assert!(judge(&run(bad, 2, true), None)
            .unwrap_err()
            .contains("EXIT_ERROR"));
        let mut stray = good;
        stray.push(ev(Start, 99, 160));
        assert!(judge(&run(stray, 2, true), None)
            .unwrap_err()
            .contains("task 99"));
    }

    #[test]
    fn signals_and_addresses_parse() {
        assert_eq!("term".parse::<StopSignal>().unwrap(), StopSignal::TERM);
        assert_eq!(
            "SIGINT".parse::<StopSignal>().unwrap().number(),
            libc::SIGINT
        );
        assert!("STOP".parse::<StopSignal>().is_err());
        assert_eq!(StopSignal::TERM.to_string(), "SIGTERM");
        assert_eq!(
            "stdout".parse::<AddressSource>().unwrap(),
            AddressSource::Stdout
        );
        assert!("dhcp".parse::<AddressSource>().is_err());
    }

    #[test]
    fn commands_are_filled_in() {
        let mut l = LaunchSpec::new(
            "qemu -netdev user,hostfwd=tcp:{ip}:{port}-:3001 -name t{index}",
            1,
            4,
        );
        l.first_ip = "127.0.1.10".parse().unwrap();
        assert_eq!(
            l.command_of(2, 4000),
            "qemu -netdev user,hostfwd=tcp:127.0.1.12:4000-:3001 -name t2"
        );
        assert!(l.check().is_ok());
        l.min = 5;
        assert!(l.check().unwrap_err().contains("min 5 / max 4"));
    }
}
