//! The shared work queue: fresh variant indices from the selection (shard, limit) that are not
//! done yet, plus requeued attempts, which go first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::Notify;

use super::RangeSet;

/// Which variants of a space a run processes.
///
/// Indices are visited in the order `k, k+n, k+2n, …` for shard `k/n`, and `limit` counts
/// positions in that sequence, so a resumed run with the same limit covers the same variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection {
    /// Process at most this many variants of the (sharded) sequence.
    pub limit: Option<u64>,
    /// `(k, n)`: only variants with `index % n == k`.
    pub shard: Option<(u64, u64)>,
}

impl Selection {
    /// Number of variants selected from a space of `len` variants (None: unbounded).
    pub fn planned(&self, len: Option<u64>) -> Option<u64> {
        let (k, n) = self.shard.unwrap_or((0, 1));
        let in_shard = len.map(|len| if len > k { (len - k).div_ceil(n) } else { 0 });
        match (in_shard, self.limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (Some(a), None) => Some(a),
            (None, l) => l,
        }
    }
}

/// One unit of work handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Variant index.
    pub index: u64,
    /// Attempts started so far for this variant, including this one (1-based).
    pub attempt: u32,
    /// Failed attempts so far (user stops do not count).
    pub failures: u32,
    /// The distinct targets on which an attempt failed.
    pub failed_on: Vec<std::net::SocketAddr>,
    /// Wall-clock start of the first attempt.
    pub first_started: Option<SystemTime>,
    /// When the job entered the retry queue (for queue-wait metrics).
    pub queued_at: Option<Instant>,
    /// When the scheduler handed this attempt to a target (the attempt's start).
    pub dispatched: Option<SystemTime>,
}

#[derive(Debug)]
struct State {
    len: Option<u64>,
    sel: Selection,
    /// Next position j in the shard sequence (index = k + n*j).
    next_pos: u64,
    done: RangeSet,
    retry: VecDeque<Job>,
    in_flight: u64,
    closed: bool,
    /// Set when fresh work comes only from grants (a shared store hands out chunks).
    gate: Option<Gate>,
}

/// Fresh work of a gated queue: chunks of indices granted by a shared store.
#[derive(Debug, Default)]
struct Gate {
    /// Granted index ranges `[first, end)`, in the order granted; the front is being taken.
    grants: VecDeque<(u64, u64)>,
    /// Indices of revoked chunks: their jobs are dropped (another process owns them now).
    revoked: RangeSet,
    /// No grant will come any more: the queue ends when the granted work is done.
    finished: bool,
    /// The store may grant more soon (the latest claim found work): a scheduler holds a
    /// target for this queue rather than give it to a lower priority meanwhile.
    awaiting: bool,
}

/// The queue shared by all workers of a run.
#[derive(Debug)]
pub struct WorkQueue {
    state: Mutex<State>,
    /// Woken on every change; may be shared with other queues (a pool's workers wait on one
    /// notification for all experiments).
    changed: Arc<Notify>,
}

/// What [`WorkQueue::take`] found.
#[derive(Debug, PartialEq)]
pub enum Take {
    /// Work to do.
    Job(Job),
    /// Every selected variant has an outcome.
    AllDone,
}

impl WorkQueue {
    /// A queue over a space of `len` variants (None: unbounded), skipping `done`.
    #[cfg(test)]
    pub fn new(len: Option<u64>, sel: Selection, done: RangeSet) -> Self {
        Self::with_notify(len, sel, done, Arc::new(Notify::new()))
    }

    /// Like [`WorkQueue::new`], waking `changed` on every change.
    pub fn with_notify(
        len: Option<u64>,
        sel: Selection,
        done: RangeSet,
        changed: Arc<Notify>,
    ) -> Self {
        WorkQueue {
            state: Mutex::new(State {
                len,
                sel,
                next_pos: 0,
                done,
                retry: VecDeque::new(),
                in_flight: 0,
                closed: false,
                gate: None,
            }),
            changed,
        }
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    /// A queue whose fresh work is granted chunk by chunk ([`WorkQueue::grant`]) and that
    /// ends only after [`WorkQueue::finish`].
    pub fn gated(changed: Arc<Notify>) -> Self {
        let q = Self::with_notify(None, Selection::default(), RangeSet::default(), changed);
        q.lock().gate = Some(Gate {
            awaiting: true,
            ..Gate::default()
        });
        q
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    /// Whether a grant is expected soon (see [`WorkQueue::gated`]): set by the feeder when
    /// a claim found work, cleared when the store had none to claim (the others hold it) or
    /// is unreachable. Wakes the waiting workers when cleared.
    pub fn set_awaiting(&self, awaiting: bool) {
        let mut s = self.lock();
        let Some(g) = s.gate.as_mut() else { return };
        let cleared = g.awaiting && !awaiting;
        g.awaiting = awaiting;
        drop(s);
        if cleared {
            self.changed.notify_waiters();
        }
    }

    /// A gated queue, open and unfinished, with nothing queued but a grant expected soon.
    pub fn awaiting_grant(&self) -> bool {
        let s = self.lock();
        !s.closed
            && s.retry.is_empty()
            && s.gate
                .as_ref()
                .is_some_and(|g| g.awaiting && !g.finished && g.grants.is_empty())
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    /// Grant the indices `first..end` of a gated queue; those in `done` already have an
    /// outcome and are skipped.
    pub fn grant(&self, first: u64, end: u64, done: &RangeSet) {
        if first >= end {
            return;
        }
        let mut s = self.lock();
        // What the store says is done replaces what this queue thought (outcomes of a chunk
        // revoked earlier may have been dropped).
        s.done.remove_range(first, end - 1);
        for (a, b) in done.ranges() {
            if b >= first && a < end {
                s.done.insert_range(a.max(first), b.min(end - 1));
            }
        }
        if let Some(g) = s.gate.as_mut() {
            g.revoked.remove_range(first, end - 1);
            g.grants.push_back((first, end));
        }
        drop(s);
        self.changed.notify_waiters();
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    /// Revoke the chunk `first..end` of a gated queue: its queued jobs are dropped, and so
    /// are its running ones when they come back for a retry.
    pub fn revoke(&self, first: u64, end: u64) {
        if first >= end {
            return;
        }
        let mut s = self.lock();
        let State {
            gate, retry, done, ..
        } = &mut *s;
        if let Some(g) = gate.as_mut() {
            // Outcomes of the chunk from now on are not recorded here; whoever holds it
            // next learns from the store which variants are done.
            done.remove_range(first, end - 1);
            g.revoked.insert_range(first, end - 1);
            g.grants.retain(|&(a, b)| !(a >= first && b <= end));
            retry.retain(|j| !(j.index >= first && j.index < end));
        }
        drop(s);
        self.changed.notify_waiters();
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    /// No more grants: a gated queue ends once its granted work is done.
    pub fn finish(&self) {
        let mut s = self.lock();
        if let Some(g) = s.gate.as_mut() {
            g.finished = true;
        }
        drop(s);
        self.changed.notify_waiters();
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    /// Granted indices not yet handed out (0 for an ungated queue).
    pub fn fresh_granted(&self) -> u64 {
        let s = self.lock();
        let Some(g) = s.gate.as_ref() else { return 0 };
        g.grants
            .iter()
            .map(|&(a, b)| {
                let mut n = b - a;
                for (x, y) in s.done.ranges() {
                    if y >= a && x < b {
                        n -= y.min(b - 1) - x.max(a) + 1;
                    }
                }
                n
            })
            .sum()
    }

    /// Variants waiting to be handed out: requeued ones plus the fresh positions left (an
    /// upper bound: positions already done on resume are counted until they are skipped).
    pub fn queued(&self) -> u64 {
        let s = self.lock();
        if s.closed {
            return 0;
        }
        if let Some(g) = s.gate.as_ref() {
            let fresh: u64 = g.grants.iter().map(|&(a, b)| b - a).sum();
            return s.retry.len() as u64 + fresh;
        }
        let (k, n) = s.sel.shard.unwrap_or((0, 1));
        let end = match (s.len, s.sel.limit) {
            (Some(len), limit) => {
                let in_shard = if len > k { (len - k).div_ceil(n) } else { 0 };
                limit.map_or(in_shard, |l| l.min(in_shard))
            }
            (None, Some(l)) => l,
            (None, None) => u64::MAX,
        };
        (s.retry.len() as u64).saturating_add(end.saturating_sub(s.next_pos))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a worker panicked while holding it; the state is still
        // consistent because every mutation is a single assignment sequence without await.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the next job without waiting; `None` when nothing is available right now.
    pub fn try_take(&self) -> Option<Take> {
        let mut s = self.lock();
        if s.closed {
            return Some(Take::AllDone);
        }
        if let Some(mut job) = s.retry.pop_front() {
            job.attempt += 1;
            s.in_flight += 1;
            return Some(Take::Job(job));
        }
        if let Some(index) = next_fresh(&mut s) {
            s.in_flight += 1;
            return Some(Take::Job(Job {
                index,
                attempt: 1,
                failures: 0,
                failed_on: Vec::new(),
                first_started: None,
                queued_at: None,
                dispatched: None,
            }));
        }
        if s.in_flight == 0 && s.gate.as_ref().is_none_or(|g| g.finished) {
            s.closed = true;
            drop(s);
            self.changed.notify_waiters();
            return Some(Take::AllDone);
        }
        None
    }

    /// Wait for the next job, or until every selected variant has an outcome.
    #[cfg(test)]
    pub async fn take(&self) -> Take {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = self.try_take() {
                return t;
            }
            notified.await;
        }
    }

    /// The job has its outcome (done or bad).
    pub fn complete(&self, index: u64) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.gate.as_ref().is_some_and(|g| g.revoked.contains(index)) {
            drop(s);
            self.changed.notify_waiters();
            return;
        }
        s.done.insert(index);
        let wake = s.in_flight == 0;
        drop(s);
        if wake {
            self.changed.notify_waiters();
        }
    }

    /// Put a job back (stopped or failed); it is handed out again before fresh work.
    pub fn requeue(&self, mut job: Job) {
        job.queued_at = Some(Instant::now());
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.gate
            .as_ref()
            .is_some_and(|g| g.revoked.contains(job.index))
        {
            drop(s);
            self.changed.notify_waiters();
            return;
        }
        s.retry.push_back(job);
        drop(s);
        self.changed.notify_waiters();
    }

    /// Whether every selected variant has an outcome.
    pub fn all_done(&self) -> bool {
        let mut s = self.lock();
        if s.closed {
            return true;
        }
        let State { gate, done, .. } = &mut *s;
        if let Some(g) = gate.as_mut() {
            // Drop grants whose indices all have an outcome already.
            g.grants
                .retain(|&(a, b)| done.next_absent(a).is_some_and(|i| i < b));
        }
        if let Some(g) = s.gate.as_ref() {
            if g.finished && g.grants.is_empty() && s.retry.is_empty() && s.in_flight == 0 {
                s.closed = true;
                return true;
            }
            return false;
        }
        if s.retry.is_empty() && s.in_flight == 0 {
            let save = s.next_pos;
            let more = next_fresh(&mut s).is_some();
            s.next_pos = save;
            if !more {
                s.closed = true;
                return true;
            }
        }
        false
    }

    /// Wait until every selected variant has an outcome.
    pub async fn wait_all_done(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.all_done() {
                return;
            }
            notified.await;
        }
    }

    /// Jobs handed out and not yet completed or requeued.
    #[cfg_attr(not(any(test, feature = "postgres")), allow(dead_code))]
    pub fn in_flight(&self) -> u64 {
        self.lock().in_flight
    }
}

/// The next selected index that is not done, advancing the position.
fn next_fresh(s: &mut State) -> Option<u64> {
    if let Some(g) = s.gate.as_mut() {
        while let Some(&(a, b)) = g.grants.front() {
            match s.done.next_absent(a) {
                Some(i) if i < b => {
                    // Taken indices count as done for the scan; the front shrinks past them.
                    g.grants[0].0 = i + 1;
                    if i + 1 >= b {
                        g.grants.pop_front();
                    }
                    return Some(i);
                }
                _ => {
                    g.grants.pop_front();
                }
            }
        }
        return None;
    }
    let (k, n) = s.sel.shard.unwrap_or((0, 1));
    loop {
        if s.sel.limit.is_some_and(|l| s.next_pos >= l) {
            return None;
        }
        let index = s.next_pos.checked_mul(n).and_then(|x| x.checked_add(k))?;
        if s.len.is_some_and(|len| index >= len) {
            return None;
        }
        match s.done.next_absent(index) {
            Some(free) if free == index => {
                s.next_pos += 1;
                return Some(index);
            }
            Some(free) => {
                // Jump to the first position whose index is >= free.
                s.next_pos = (free - k).div_ceil(n);
            }
            None => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &WorkQueue) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(Take::Job(j)) = q.try_take() {
            out.push(j.index);
            q.complete(j.index);
        }
        out
    }

    #[test]
    fn shard_limit_and_done_skip() {
        let mut done = RangeSet::default();
        done.insert_range(0, 9);
        done.insert(13);
        let sel = Selection {
            limit: Some(6),
            shard: Some((1, 3)),
        };
        assert_eq!(sel.planned(Some(100)), Some(6));
        let q = WorkQueue::new(Some(100), sel, done);
        // positions 0..6 of 1,4,7,10,13,16 minus done {1,4,7,13}
        assert_eq!(drain(&q), vec![10, 16]);
        assert_eq!(q.try_take(), Some(Take::AllDone));
    }

    #[test]
    fn planned_counts() {
        let s = Selection {
            limit: None,
            shard: Some((2, 4)),
        };
        assert_eq!(s.planned(Some(10)), Some(2)); // 2, 6
        assert_eq!(s.planned(Some(2)), Some(0));
        assert_eq!(s.planned(None), None);
        assert_eq!(Selection::default().planned(Some(7)), Some(7));
    }

    #[test]
    fn requeue_goes_first_and_counts_attempts() {
        let q = WorkQueue::new(Some(3), Selection::default(), RangeSet::default());
        let Some(Take::Job(a)) = q.try_take() else {
            panic!()
        };
        assert_eq!(a.attempt, 1);
        q.requeue(a);
        let Some(Take::Job(b)) = q.try_take() else {
            panic!()
        };
        assert_eq!((b.index, b.attempt), (0, 2));
        assert_eq!(q.in_flight(), 1);
        // In flight: not all done even after fresh work ends.
        q.complete(b.index);
        assert_eq!(drain(&q), vec![1, 2]);
        assert!(q.all_done());
    }

    #[tokio::test]
    async fn take_waits_for_in_flight_requeue() {
        let q = std::sync::Arc::new(WorkQueue::new(
            Some(1),
            Selection::default(),
            RangeSet::default(),
        ));
        let Take::Job(j) = q.take().await else {
            panic!()
        };
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.take().await });
        tokio::task::yield_now().await;
        q.requeue(j);
        let Take::Job(again) = waiter.await.unwrap() else {
            panic!()
        };
        assert_eq!(again.attempt, 2);
        q.complete(again.index);
        assert_eq!(q.take().await, Take::AllDone);
    }

    #[test]
    fn gated_queue_takes_only_granted_work_and_ends_after_finish() {
        let q = WorkQueue::gated(Arc::new(Notify::new()));
        // Nothing granted yet: no job, but not done either.
        assert_eq!(q.try_take(), None);
        assert!(!q.all_done());
        let mut done = RangeSet::default();
        done.insert_range(12, 13);
        q.grant(10, 15, &done);
        assert_eq!(q.fresh_granted(), 3);
        assert_eq!(drain(&q), vec![10, 11, 14]);
        assert_eq!(q.try_take(), None, "waits for a grant until finished");
        q.grant(20, 23, &RangeSet::default());
        let Some(Take::Job(j)) = q.try_take() else {
            panic!("expected a job")
        };
        assert_eq!(j.index, 20);
        // The chunk 20..23 is taken over by another process: its queued and running jobs go.
        q.revoke(20, 23);
        assert_eq!(q.queued(), 0);
        q.requeue(j);
        assert_eq!(q.try_take(), None);
        // Granted again later (taken back from the store): its work is there again, minus
        // what the store says is done.
        let mut done = RangeSet::default();
        done.insert(21);
        q.grant(20, 23, &done);
        assert_eq!(drain(&q), vec![20, 22]);
        q.finish();
        assert!(q.all_done());
        assert_eq!(q.try_take(), Some(Take::AllDone));
    }
}
