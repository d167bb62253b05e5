//! The error of every target operation, typed so the distributor can decide what to requeue.

use std::net::SocketAddr;
use std::time::Duration;

use super::Dialect;

/// Why a target operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target actively refused the TCP connection (nothing listens on the port).
    #[error("connection refused")]
    Refused,
    /// A wait ran out of time.
    #[error("{addr}: timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// The target.
        addr: SocketAddr,
        /// What was awaited (`connect`, `AVAILABLE echo`, `GO_SEND`, `job events`, ...).
        waiting_for: String,
        /// How long was waited.
        after: Duration,
    },
    /// The target closed or reset the connection.
    #[error("{addr}: connection lost while {during}")]
    ConnectionLost {
        /// The target.
        addr: SocketAddr,
        /// What the session was doing.
        during: String,
    },
    /// The target sent bytes that break the protocol (garbage frame, oversized frame, ...).
    #[error("{addr}: protocol violation: {detail}")]
    Protocol {
        /// The target.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },
    /// The target ran the task-set but is suspect: EXIT_ERROR, or a job count that differs from
    /// `numberofjobs`.
    #[error("{addr}: target fault: {reason}")]
    TargetFault {
        /// The target.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The dialect cannot do what was asked (e.g. admission-control data to a v2 or v3 target,
    /// AVAILABLE on v1/v2). Nothing was sent.
    #[error("dialect {dialect} does not support {what}")]
    Unsupported {
        /// The session's dialect.
        dialect: Dialect,
        /// What was asked.
        what: String,
    },
    /// The task-set or its binaries cannot be sent (validation failed, binary missing). Nothing
    /// was sent; retrying on another target will fail the same way.
    #[error("cannot send task-set: {reason}")]
    Invalid {
        /// What is wrong with the input.
        reason: String,
    },
    /// The operation was cancelled through its token (the target was sent STOP and CLEAR).
    #[error("cancelled")]
    Cancelled,
    /// Another I/O error (connect failed for a reason other than refusal, write failed, ...).
    #[error("{addr}: I/O error while {during}: {source}")]
    Io {
        /// The target.
        addr: SocketAddr,
        /// What the session was doing.
        during: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The kind of a [`TargetError`] without its details, for branching and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`TargetError::Refused`]
    Refused,
    /// [`TargetError::Timeout`]
    Timeout,
    /// [`TargetError::ConnectionLost`]
    ConnectionLost,
    /// [`TargetError::Protocol`]
    Protocol,
    /// [`TargetError::TargetFault`]
    TargetFault,
    /// [`TargetError::Unsupported`]
    Unsupported,
    /// [`TargetError::Invalid`]
    Invalid,
    /// [`TargetError::Cancelled`]
    Cancelled,
    /// [`TargetError::Io`]
    Io,
}

impl TargetError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TargetError::Refused => ErrorKind::Refused,
            TargetError::Timeout { .. } => ErrorKind::Timeout,
            TargetError::ConnectionLost { .. } => ErrorKind::ConnectionLost,
            TargetError::Protocol { .. } => ErrorKind::Protocol,
            TargetError::TargetFault { .. } => ErrorKind::TargetFault,
            TargetError::Unsupported { .. } => ErrorKind::Unsupported,
            TargetError::Invalid { .. } => ErrorKind::Invalid,
            TargetError::Cancelled => ErrorKind::Cancelled,
            TargetError::Io { .. } => ErrorKind::Io,
        }
    }

    /// True if the same task-set may succeed on another attempt (on this target after a
    /// restart, or on another target): refused, timeout, connection lost, protocol violation,
    /// target fault and I/O errors. False for unsupported, invalid and cancelled.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Refused
                | ErrorKind::Timeout
                | ErrorKind::ConnectionLost
                | ErrorKind::Protocol
                | ErrorKind::TargetFault
                | ErrorKind::Io
        )
    }

    /// True for [`TargetError::TargetFault`].
    pub fn is_target_fault(&self) -> bool {
        self.kind() == ErrorKind::TargetFault
    }

    /// True if the target may have rebooted, so that binaries sent to it must count as unsent:
    /// the connection was lost or broke, or the target went silent (it is reconnected
    /// afterwards). A fault inside a task-set on a live connection does not qualify.
    pub fn may_have_rebooted(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Timeout | ErrorKind::ConnectionLost | ErrorKind::Io
        )
    }

    /// True if the target should be considered dead or suspect (restart it, forget what was
    /// sent to it): timeout, connection lost, protocol violation, target fault.
    pub fn target_suspect(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Timeout
                | ErrorKind::ConnectionLost
                | ErrorKind::Protocol
                | ErrorKind::TargetFault
        )
    }
}
