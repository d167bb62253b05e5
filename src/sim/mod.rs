//! A simulated target that speaks the target protocol and schedules jobs in virtual time.
