//! Host pools: CIDR ranges, probers, availability checks and re-checks with backoff.
