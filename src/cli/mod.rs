//! Subcommands of the `taskdist` binary. Each file holds one subcommand's clap `Args` and its
//! `run` function; the library does the work.

pub mod discover;
pub mod list;
pub mod run;
pub mod sim;
