//! The dashboard: one HTML page, served from the binary, that reads the API and the event
//! stream with the token from the address' fragment (`/#token=...`, never sent to a server).

/// The page.
pub(crate) const PAGE: &str = include_str!("dashboard.html");
