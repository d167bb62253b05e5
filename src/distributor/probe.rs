//! Choice of availability check for a run.

use std::sync::Arc;

use crate::discovery::{AvailableProber, IcmpConfig, IcmpProber, Prober, TcpProber};
use crate::protocol::SessionConfig;

/// How a run checks that a host is available before it opens a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ProbeKind {
    /// ICMP echo (ping). Needs raw sockets (root) or unprivileged ICMP sockets
    /// (`net.ipv4.ping_group_range`); falls back to `tcp` with a warning when neither is allowed.
    #[default]
    Icmp,
    /// A TCP connect to the target port.
    Tcp,
    /// The protocol's AVAILABLE handshake on a fresh connection (v3 targets).
    Available,
}

impl ProbeKind {
    /// Build the prober; the session's connect and reply timeouts bound each probe.
    pub fn prober(self, session: &SessionConfig) -> Arc<dyn Prober> {
        let timeout = session.connect_timeout.max(session.reply_timeout);
        match self {
            ProbeKind::Icmp => match IcmpProber::open(IcmpConfig::default()) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::warn!(error = %e, "ICMP probes are not allowed here; checking hosts with TCP connects instead");
                    Arc::new(TcpProber::new(timeout))
                }
            },
            ProbeKind::Tcp => Arc::new(TcpProber::new(timeout)),
            ProbeKind::Available => Arc::new(AvailableProber::new(timeout)),
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProbeKind::Icmp => "icmp",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Available => "available",
        })
    }
}
