//! Host pools: user ranges turned into a merged, lazily iterated set of socket addresses.
//!
//! A pool is a list of disjoint, sorted intervals per (address family, port). Nothing is
//! materialised: a `/8` or an IPv6 `/64` costs one interval, and [`HostPool::iter`] walks the
//! intervals address by address.
//!
//! # Network and broadcast addresses
//! For an IPv4 range of prefix length `/30` or shorter, the network address (all host bits 0)
//! and the broadcast address (all host bits 1) are left out, as `fping -g` does: no target can
//! be reached on them. `/31` (RFC 3021 point-to-point) and `/32` keep every address. For IPv6
//! ranges up to `/126` the all-zero host address (the subnet-router anycast address) is left
//! out; IPv6 has no broadcast address, so the top address stays in. An address given on its
//! own (`10.0.0.255`) is always kept, also when a range drops it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnetwork::IpNetwork;

/// The default limit on the number of addresses in one pool: 2^24, one IPv4 `/8`.
///
/// At tens of thousands of probes per second a `/8` is swept in minutes; anything larger (an
/// IPv6 `/64` has 2^64 addresses) could never be swept and is almost surely a typo. Raise the
/// limit explicitly with [`HostPool::parse_with_limit`] (CLI: `--max-hosts`).
pub const DEFAULT_MAX_HOSTS: u128 = 1 << 24;

/// Why a list of ranges could not be turned into a pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// An item is neither an address, `address:port`, a CIDR range nor `range:port`.
    #[error(
        "cannot parse host item {item:?}{detail}: expected an address (127.0.0.5, ::1), \
         address:port (127.0.0.5:4000, [::1]:3001), or a CIDR range (10.0.0.0/24, fd00::/120) \
         optionally followed by :port ([fd00::/120]:3001)"
    )]
    Syntax {
        /// The item as given.
        item: String,
        /// What is wrong with it, when known (starts with ": ", or is empty).
        detail: String,
    },
    /// The port of an item is 0, which no target can listen on.
    #[error("host item {item:?} names port 0; expected a port from 1 to 65535")]
    PortZero {
        /// The item as given.
        item: String,
    },
    /// The pool holds more addresses than the limit allows.
    #[error(
        "the ranges hold {hosts} addresses, more than the limit of {limit}; \
         sweep smaller ranges or raise the limit explicitly (--max-hosts)"
    )]
    TooLarge {
        /// Number of distinct addresses after merging.
        hosts: u128,
        /// The limit in force.
        limit: u128,
    },
    /// No item was given at all.
    #[error("no host ranges given; expected at least one address or CIDR range")]
    Empty,
    /// A CIDR range has bits set after its prefix (`127.0.4.0/20`), so it is not clear which
    /// range was meant.
    #[error("{item} has host bits set; did you mean {meant}?")]
    HostBits {
        /// The range as given.
        item: String,
        /// The range with the host bits cleared.
        meant: String,
    },
}

/// Address family of an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Family {
    V4,
    V6,
}

/// One inclusive interval `[first, last]` of addresses of one family, all with one port.
/// IPv4 addresses are stored widened to `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Span {
    family: Family,
    port: u16,
    first: u128,
    last: u128,
}

impl Span {
    fn len(&self) -> u128 {
        // Saturates for the one span that cannot be counted in u128: all of IPv6.
        (self.last - self.first).saturating_add(1)
    }

    fn addr(&self, value: u128) -> SocketAddr {
        let ip = match self.family {
            // Values of V4 spans always fit in 32 bits (they were built from u32).
            Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        };
        SocketAddr::new(ip, self.port)
    }
}

/// A merged, lazily iterated set of target addresses (IP and port).
///
/// ```
/// use taskdist::discovery::HostPool;
///
/// let pool = HostPool::parse(["10.0.0.0/30", "10.0.0.2", "[::1]:4000"], 3001).unwrap();
/// // 10.0.0.0/30 keeps .1 and .2 (network and broadcast left out); .2 is merged.
/// assert_eq!(pool.len(), 3);
/// let all: Vec<String> = pool.iter().map(|a| a.to_string()).collect();
/// assert_eq!(all, ["10.0.0.1:3001", "10.0.0.2:3001", "[::1]:4000"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostPool {
    spans: Vec<Span>,
    len: u128,
}

impl HostPool {
    /// Parses and merges `items` with the [`DEFAULT_MAX_HOSTS`] limit.
    ///
    /// Each item is an address (`127.0.0.5`, `::1`), `address:port` (`127.0.0.5:4000`,
    /// `[::1]:3001`), a CIDR range (`10.0.0.0/24`, `fd00::/120`) or a range with a port
    /// (`10.0.0.0/24:4000`, `[fd00::/120]:4000`). Items without a port get `default_port`.
    /// Duplicates and overlaps are merged.
    pub fn parse<I, S>(items: I, default_port: u16) -> Result<HostPool, PoolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::parse_with_limit(items, default_port, DEFAULT_MAX_HOSTS)
    }

    /// Like [`HostPool::parse`] with an explicit limit on the number of addresses.
    pub fn parse_with_limit<I, S>(
        items: I,
        default_port: u16,
        max_hosts: u128,
    ) -> Result<HostPool, PoolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut spans = Vec::new();
        for item in items {
            spans.push(parse_item(item.as_ref().trim(), default_port)?);
        }
        if spans.is_empty() {
            return Err(PoolError::Empty);
        }
        let pool = Self::from_spans(spans);
        if pool.len > max_hosts {
            return Err(PoolError::TooLarge {
                hosts: pool.len,
                limit: max_hosts,
            });
        }
        Ok(pool)
    }

    /// A pool of exactly the given addresses (merged; no limit, since they are materialised
    /// already).
    pub fn from_addrs<I: IntoIterator<Item = SocketAddr>>(addrs: I) -> HostPool {
        let spans = addrs
            .into_iter()
            .map(|a| {
                let (family, value) = ip_value(a.ip());
                Span {
                    family,
                    port: a.port(),
                    first: value,
                    last: value,
                }
            })
            .collect();
        Self::from_spans(spans)
    }

    fn from_spans(mut spans: Vec<Span>) -> HostPool {
        spans.sort();
        let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
        for span in spans {
            match merged.last_mut() {
                Some(prev)
                    if prev.family == span.family
                        && prev.port == span.port
                        && span.first <= prev.last.saturating_add(1) =>
                {
                    prev.last = prev.last.max(span.last);
                }
                _ => merged.push(span),
            }
        }
        let len = merged
            .iter()
            .fold(0u128, |acc, s| acc.saturating_add(s.len()));
        HostPool { spans: merged, len }
    }

    /// The union of several pools.
    pub fn merge(pools: impl IntoIterator<Item = HostPool>) -> HostPool {
        Self::from_spans(pools.into_iter().flat_map(|p| p.spans).collect())
    }

    /// Whether the two pools share an address (same IP and port).
    pub fn overlaps(&self, other: &HostPool) -> bool {
        self.spans.iter().any(|a| {
            other.spans.iter().any(|b| {
                a.family == b.family && a.port == b.port && a.first <= b.last && b.first <= a.last
            })
        })
    }

    /// Number of distinct addresses (IP and port) in the pool.
    pub fn len(&self) -> u128 {
        self.len
    }

    /// True when the pool holds no address.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when `addr` (IP and port) is in the pool.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let (family, value) = ip_value(addr.ip());
        self.spans.iter().any(|s| {
            s.family == family && s.port == addr.port() && s.first <= value && value <= s.last
        })
    }

    /// Iterates over every address in the pool, IPv4 before IPv6, ascending per port. Lazy:
    /// nothing is allocated per address.
    pub fn iter(&self) -> HostIter<'_> {
        HostIter {
            spans: &self.spans,
            index: 0,
            next: self.spans.first().map(|s| s.first),
            remaining: self.len,
        }
    }
}

impl<'a> IntoIterator for &'a HostPool {
    type Item = SocketAddr;
    type IntoIter = HostIter<'a>;
    fn into_iter(self) -> HostIter<'a> {
        self.iter()
    }
}

impl FromStr for HostPool {
    type Err = PoolError;
    /// Parses whitespace- or comma-separated items with the default target port 3001.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPool::parse(
            s.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|i| !i.is_empty()),
            3001,
        )
    }
}

impl fmt::Display for HostPool {
    /// Writes the merged intervals, e.g. `127.0.0.1-127.0.0.254:3001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.spans.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let first = s.addr(s.first).ip();
            let last = s.addr(s.last).ip();
            match (s.first == s.last, s.family) {
                (true, Family::V4) => write!(f, "{first}:{}", s.port)?,
                (true, Family::V6) => write!(f, "[{first}]:{}", s.port)?,
                (false, Family::V4) => write!(f, "{first}-{last}:{}", s.port)?,
                (false, Family::V6) => write!(f, "[{first}-{last}]:{}", s.port)?,
            }
        }
        Ok(())
    }
}

/// Lazy iterator over the addresses of a [`HostPool`].
#[derive(Debug, Clone)]
pub struct HostIter<'a> {
    spans: &'a [Span],
    index: usize,
    next: Option<u128>,
    remaining: u128,
}

impl Iterator for HostIter<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        let span = self.spans.get(self.index)?;
        let value = self.next?;
        if value < span.last {
            self.next = Some(value + 1);
        } else {
            self.index += 1;
            self.next = self.spans.get(self.index).map(|s| s.first);
        }
        self.remaining = self.remaining.saturating_sub(1);
        Some(span.addr(value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, usize::try_from(self.remaining).ok())
    }
}

fn ip_value(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

/// Parses one item into a span (before merging).
fn parse_item(item: &str, default_port: u16) -> Result<Span, PoolError> {
    let syntax = || PoolError::Syntax {
        item: item.to_string(),
        detail: syntax_detail(item),
    };
    if item.is_empty() {
        return Err(syntax());
    }
    // address:port, [v6]:port
    if let Ok(sa) = item.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(PoolError::PortZero {
                item: item.to_string(),
            });
        }
        return Ok(single(sa.ip(), sa.port()));
    }
    // bare address or CIDR range
    if let Some(span) = parse_range(item, default_port)? {
        return Ok(span);
    }
    // [address] or [range] without a port
    if let Some(inner) = item.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return parse_range(inner, default_port)?.ok_or_else(syntax);
    }
    // range:port, [range]:port
    let (range, port) = if let Some(rest) = item.strip_prefix('[') {
        let (range, port) = rest.split_once("]:").ok_or_else(syntax)?;
        (range, port)
    } else {
        let (range, port) = item.rsplit_once(':').ok_or_else(syntax)?;
        if range.contains(':') {
            // An IPv6 range with a port must be bracketed.
            return Err(syntax());
        }
        (range, port)
    };
    let port: u16 = port.parse().map_err(|_| syntax())?;
    if port == 0 {
        return Err(PoolError::PortZero {
            item: item.to_string(),
        });
    }
    parse_range(range, port)?.ok_or_else(syntax)
}

/// Why an item that looks like `address/prefix` is wrong, for the error message.
fn syntax_detail(item: &str) -> String {
    let core = item.trim_start_matches('[');
    let core = core.split(']').next().unwrap_or(core);
    let Some((addr, prefix)) = core.split_once('/') else {
        return String::new();
    };
    let prefix = prefix.split(':').next().unwrap_or(prefix);
    match addr.parse::<IpAddr>() {
        Err(_) => format!(": {addr:?} is not an IPv4 or IPv6 address"),
        Ok(ip) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match prefix.parse::<u32>() {
                Ok(p) if p > max => {
                    format!(": prefix /{p} is longer than the {max} bits of the address")
                }
                Ok(_) => String::new(),
                Err(_) => format!(": prefix {prefix:?} is not a number from 0 to {max}"),
            }
        }
    }
}

fn single(ip: IpAddr, port: u16) -> Span {
    let (family, value) = ip_value(ip);
    Span {
        family,
        port,
        first: value,
        last: value,
    }
}

/// Parses `addr` or `addr/prefix`; applies the network/broadcast rule of the module docs.
/// `Ok(None)`: not an address or range; an error: a range with host bits set.
fn parse_range(text: &str, port: u16) -> Result<Option<Span>, PoolError> {
    if !text.contains('/') {
        let Ok(ip) = text.parse::<IpAddr>() else {
            return Ok(None);
        };
        return Ok(Some(single(ip, port)));
    }
    let Ok(net) = text.parse::<IpNetwork>() else {
        return Ok(None);
    };
    let prefix = net.prefix();
    if net.ip() != net.network() {
        return Err(PoolError::HostBits {
            item: text.to_owned(),
            meant: format!("{}/{prefix}", net.network()),
        });
    }
    Ok(match net {
        IpNetwork::V4(n) => {
            let host_bits = 32 - u32::from(prefix);
            let base = u32::from(n.network()) as u128;
            let last = base + ((1u128 << host_bits) - 1);
            let (first, last) = if host_bits >= 2 {
                (base + 1, last - 1)
            } else {
                (base, last)
            };
            Some(Span {
                family: Family::V4,
                port,
                first,
                last,
            })
        }
        IpNetwork::V6(n) => {
            let host_bits = 128 - u32::from(prefix);
            let base = u128::from(n.network());
            let last = if host_bits == 128 {
                u128::MAX
            } else {
                base + ((1u128 << host_bits) - 1)
            };
            let first = if host_bits >= 2 { base + 1 } else { base };
            Some(Span {
                family: Family::V6,
                port,
                first,
                last,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(pool: &HostPool) -> Vec<String> {
        pool.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn single_addresses_and_ports() {
        let pool = HostPool::parse(["127.0.0.5", "127.0.0.5:4000", "[::1]:3001", "::2"], 3001)
            .expect("valid");
        assert_eq!(
            addrs(&pool),
            [
                "127.0.0.5:3001",
                "127.0.0.5:4000",
                "[::1]:3001",
                "[::2]:3001"
            ]
        );
        assert_eq!(pool.len(), 4);
    }

    #[test]
    fn network_and_broadcast_rule() {
        let p24 = HostPool::parse(["10.0.0.0/24"], 1).expect("valid");
        assert_eq!(p24.len(), 254);
        let first = p24.iter().next().expect("non-empty");
        assert_eq!(first.to_string(), "10.0.0.1:1");
        assert_eq!(
            p24.iter().last().map(|a| a.to_string()),
            Some("10.0.0.254:1".into())
        );
        let p31 = HostPool::parse(["10.0.0.0/31"], 1).expect("valid");
        assert_eq!(addrs(&p31), ["10.0.0.0:1", "10.0.0.1:1"]);
        let p32 = HostPool::parse(["10.0.0.7/32"], 1).expect("valid");
        assert_eq!(addrs(&p32), ["10.0.0.7:1"]);
        let v6 = HostPool::parse(["fd00::/126"], 1).expect("valid");
        assert_eq!(addrs(&v6), ["[fd00::1]:1", "[fd00::2]:1", "[fd00::3]:1"]);
        // An explicit address is kept even where a range drops it.
        let both = HostPool::parse(["10.0.0.0/24", "10.0.0.255", "10.0.0.0"], 1).expect("valid");
        assert_eq!(both.len(), 256);
    }

    #[test]
    fn cidr_with_host_bits_is_refused_naming_the_network() {
        let err = HostPool::parse(["127.0.4.0/20"], 1).expect_err("host bits set");
        assert_eq!(
            err.to_string(),
            "127.0.4.0/20 has host bits set; did you mean 127.0.0.0/20?"
        );
        for item in ["10.0.0.77/30:4000", "[fd00::5/120]", "[fd00::5/120]:4000"] {
            let err = HostPool::parse([item], 1).expect_err(item);
            assert!(matches!(err, PoolError::HostBits { .. }), "{item}: {err}");
        }
        let err = HostPool::parse(["fd00::5/120"], 1).expect_err("v6 host bits");
        assert!(
            err.to_string().contains("did you mean fd00::/120?"),
            "{err}"
        );
        // The network itself and a /32 are fine.
        HostPool::parse(["127.0.0.0/20", "10.0.0.7/32"], 1).expect("valid");
    }

    #[test]
    fn merges_duplicates_overlaps_and_neighbours() {
        let pool = HostPool::parse(
            [
                "10.200.45.0/24",
                "10.200.45.0/25",
                "10.200.45.17",
                "10.200.46.0/24",
                "10.200.45.255",
                "10.200.46.0",
            ],
            3001,
        )
        .expect("valid");
        assert_eq!(pool.len(), 254 + 254 + 2);
        assert_eq!(pool.to_string(), "10.200.45.1-10.200.46.254:3001");
        let v: Vec<_> = pool.iter().collect();
        let mut sorted = v.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(v, sorted, "iteration is ascending without duplicates");
    }

    #[test]
    fn different_ports_do_not_merge() {
        let pool = HostPool::parse(
            ["127.0.0.0/30", "127.0.0.0/30:4000", "127.0.0.1:3001"],
            3001,
        )
        .expect("valid");
        assert_eq!(pool.len(), 4);
        assert!(pool.contains("127.0.0.2:4000".parse().expect("addr")));
        assert!(!pool.contains("127.0.0.3:4000".parse().expect("addr")));
    }

    #[test]
    fn ranges_with_ports() {
        let pool = HostPool::parse(["[fd00::/127]:4000", "10.0.0.0/31:5"], 1).expect("valid");
        assert_eq!(
            addrs(&pool),
            [
                "10.0.0.0:5",
                "10.0.0.1:5",
                "[fd00::]:4000",
                "[fd00::1]:4000"
            ]
        );
    }

    #[test]
    fn huge_ranges_stay_lazy_and_respect_the_limit() {
        let err = HostPool::parse(["fd00::/64"], 1).expect_err("too large");
        assert!(matches!(err, PoolError::TooLarge { .. }), "{err}");
        let pool = HostPool::parse_with_limit(["fd00::/64"], 1, u128::MAX).expect("valid");
        assert_eq!(pool.len(), (1u128 << 64) - 1);
        let first: Vec<_> = pool.iter().take(2).map(|a| a.to_string()).collect();
        assert_eq!(first, ["[fd00::1]:1", "[fd00::2]:1"]);
        let all = HostPool::parse_with_limit(["::/0", "::"], 1, u128::MAX).expect("valid");
        assert_eq!(all.len(), u128::MAX, "saturates instead of overflowing");
        assert_eq!(
            all.iter().next().map(|a| a.to_string()),
            Some("[::]:1".into())
        );
        let p8 = HostPool::parse(["10.0.0.0/8"], 1).expect("a /8 is within the default limit");
        assert_eq!(p8.len(), (1 << 24) - 2);
        assert_eq!(p8.iter().size_hint().0, (1 << 24) - 2);
    }

    #[test]
    fn rejects_bad_items_with_clear_errors() {
        for bad in [
            "",
            "host.example",
            "10.0.0.0/33",
            "10.0.0.1:99999",
            "fd00::/120:4000",
            "[fd00::/120",
            "10.0.0.0/24:x",
        ] {
            let err = HostPool::parse([bad], 1).expect_err(bad);
            assert!(err.to_string().contains("expected"), "{bad}: {err}");
        }
        assert_eq!(
            HostPool::parse(["10.0.0.1:0"], 1),
            Err(PoolError::PortZero {
                item: "10.0.0.1:0".into()
            })
        );
        assert_eq!(
            HostPool::parse(Vec::<String>::new(), 1),
            Err(PoolError::Empty)
        );
    }

    #[test]
    fn from_str_and_from_addrs() {
        let pool: HostPool = "127.0.0.1, 127.0.0.2 127.0.0.3".parse().expect("valid");
        assert_eq!(pool.to_string(), "127.0.0.1-127.0.0.3:3001");
        let again = HostPool::from_addrs(pool.iter());
        assert_eq!(again, pool);
    }

    proptest::proptest! {
        #[test]
        fn merged_pool_equals_set_union(
            nets in proptest::collection::vec((0u32..64, 26u8..=32), 1..8)
        ) {
            let items: Vec<String> = nets
                .iter()
                .map(|(o, p)| format!("10.0.{}.{}/{}", o / 4, (o % 4) * 64, p))
                .collect();
            let pool = HostPool::parse(&items, 1).expect("valid");
            let mut expected = std::collections::BTreeSet::new();
            for item in &items {
                let one = HostPool::parse([item], 1).expect("valid");
                expected.extend(one.iter());
            }
            let got: Vec<_> = pool.iter().collect();
            proptest::prop_assert_eq!(got.len() as u128, pool.len());
            proptest::prop_assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
        }
    }
}
