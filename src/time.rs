//! Instant arithmetic that cannot overflow, shared by the session and the simulator.

use std::time::Duration;

use tokio::time::Instant;

/// Longest wait or span any setting can ask for (ten years): keeps instant arithmetic from
/// overflowing whatever a user or a target supplies.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `base + d`, with `d` capped at [`MAX_WAIT`].
pub(crate) fn at(base: Instant, d: Duration) -> Instant {
    base.checked_add(d.min(MAX_WAIT)).unwrap_or(base)
}
