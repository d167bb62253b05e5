//! Subcommands of the `taskdist` binary. Each file holds one subcommand's clap `Args` and its
//! `run` function; the library does the work.

pub mod discover;
pub mod list;
pub mod report;
pub mod run;
pub mod service;
pub mod sim;
pub mod store;

use taskdist::discovery::PoolError;
use taskdist::distributor::{DistributorError, LedgerError};
use taskdist::tasksets::SpecError;
use taskdist::ResultDirError;

/// A usage or input error found by the command line itself (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit code: 0 all done.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run finished, some variants are bad.
pub const EXIT_BAD: u8 = 1;
/// Exit code: usage or input error (bad flag, spec, host range, option, directory).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: runtime failure (handler I/O, directory locked, internal error).
pub const EXIT_RUNTIME: u8 = 3;
/// Exit code: no usable target for the give-up time.
pub const EXIT_GAVE_UP: u8 = 4;
/// Exit code: interrupted by Ctrl-C or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The exit code for an error, by the type of the first error in its chain that tells.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<UsageError>() || cause.is::<SpecError>() || cause.is::<PoolError>() {
            return EXIT_USAGE;
        }
        if let Some(l) = cause.downcast_ref::<LedgerError>() {
            return ledger_code(l);
        }
        if let Some(taskdist::sim::SimError::Invalid(_)) = cause.downcast_ref() {
            return EXIT_USAGE;
        }
        if let Some(r) = cause.downcast_ref::<taskdist::report::ReportError>() {
            return if r.is_input_error() {
                EXIT_USAGE
            } else {
                EXIT_RUNTIME
            };
        }
        if let Some(d) = cause.downcast_ref::<ResultDirError>() {
            return match d {
                ResultDirError::Exists { .. } | ResultDirError::Missing { .. } => EXIT_USAGE,
                ResultDirError::Ledger(l) => ledger_code(l),
                _ => EXIT_RUNTIME,
            };
        }
        if let Some(d) = cause.downcast_ref::<DistributorError>() {
            return match d {
                DistributorError::Hosts(_)
                | DistributorError::NoHosts
                | DistributorError::Config(_) => EXIT_USAGE,
                DistributorError::Ledger(l) => ledger_code(l),
                DistributorError::GaveUp { .. } => EXIT_GAVE_UP,
                _ => EXIT_RUNTIME,
            };
        }
    }
    EXIT_RUNTIME
}

fn ledger_code(l: &LedgerError) -> u8 {
    match l {
        LedgerError::Missing { .. } | LedgerError::Mismatch { .. } | LedgerError::Exists { .. } => {
            EXIT_USAGE
        }
        _ => EXIT_RUNTIME,
    }
}
