//! A node's cluster address as configured: a host (an IP address or a DNS name) and a port. It
//! stays a name until the moment of a dial: on Kubernetes or compose a peer keeps its name while
//! its IP address changes with every restart, so resolving once at startup would dial a stale
//! address forever.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// `host:port`, where host is an IP address (IPv6 in brackets) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerAddr {
    /// An IP address (without brackets) or a DNS name, as written.
    host: String,
    port: u16,
}

/// Why a string is not a `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAddrError {
    /// No `:port` at the end.
    #[error("{0:?} is not host:port")]
    NoPort(String),
    /// The port is not a number from 0 to 65535.
    #[error("{0:?}: the port is not a number from 0 to 65535")]
    BadPort(String),
    /// The host is neither an IP address nor a DNS name.
    #[error("{0:?}: the host is neither an IP address nor a DNS name (letters, digits, '-' and '.')")]
    BadHost(String),
}

impl PeerAddr {
    /// The address `host:port`; the host must be an IP address or a DNS name.
    pub fn new(host: &str, port: u16) -> Result<Self, PeerAddrError> {
        if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
            return Err(PeerAddrError::BadHost(format!("{host}:{port}")));
        }
        Ok(Self { host: host.to_owned(), port })
    }

    /// The host: an IP address or a DNS name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP address, when the host is one rather than a name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// A DNS name as RFC 1123 allows it: dot-separated labels of letters, digits and inner hyphens,
/// each at most 63 bytes, at most 253 in all (a trailing dot, the root, is allowed).
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, port) = text.rsplit_once(':').ok_or_else(|| PeerAddrError::NoPort(text.to_owned()))?;
        let port: u16 = port.parse().map_err(|_| PeerAddrError::BadPort(text.to_owned()))?;
        // An IPv6 host is bracketed (`[::1]:7000`); a bare one would be ambiguous with the port.
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => return Err(PeerAddrError::BadHost(text.to_owned())),
            None if host.contains(':') => return Err(PeerAddrError::BadHost(text.to_owned())),
            None => host,
        };
        Self::new(host, port).map_err(|_| PeerAddrError::BadHost(text.to_owned()))
    }
}

impl TryFrom<String> for PeerAddr {
    type Error = PeerAddrError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PeerAddr> for String {
    fn from(addr: PeerAddr) -> Self {
        addr.to_string()
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(v6)) => write!(f, "[{v6}]:{}", self.port),
            Some(IpAddr::V4(_)) | None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_parse_and_print_back_the_same() {
        for text in [
            "localhost:7000",
            "127.0.0.1:9081",
            "[::1]:7000",
            "bazaar-2.bazaar-cluster.shop.svc.cluster.local:7000",
            "node1:0",
            "bazaar-0.bazaar-cluster.shop.svc.cluster.local.:7000",
        ] {
            let addr: PeerAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(addr.to_string(), text);
        }
        let addr: PeerAddr = "node1:7000".parse().unwrap();
        assert_eq!((addr.host(), addr.port(), addr.ip()), ("node1", 7000, None));
        assert_eq!("10.0.0.5:7000".parse::<PeerAddr>().unwrap().ip(), Some([10, 0, 0, 5].into()));
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        assert_eq!("node1".parse::<PeerAddr>(), Err(PeerAddrError::NoPort("node1".into())));
        assert_eq!("node1:70000".parse::<PeerAddr>(), Err(PeerAddrError::BadPort("node1:70000".into())));
        assert_eq!("node1:".parse::<PeerAddr>(), Err(PeerAddrError::BadPort("node1:".into())));
        for bad in [":7000", "::1:7000", "[node1]:7000", "no_underscores:7000", "-x:7000", "a..b:7000", "a b:1"] {
            assert!(matches!(bad.parse::<PeerAddr>(), Err(PeerAddrError::BadHost(_))), "{bad} was accepted");
        }
        assert!(format!("{}.x:1", "a".repeat(64)).parse::<PeerAddr>().is_err(), "a 64-byte label");
    }

    #[test]
    fn it_reads_from_and_writes_to_a_plain_string() {
        let addr: PeerAddr = serde_json::from_str("\"bazaar-1.bazaar-cluster:7000\"").unwrap();
        assert_eq!(serde_json::to_string(&addr).unwrap(), "\"bazaar-1.bazaar-cluster:7000\"");
        assert!(serde_json::from_str::<PeerAddr>("\"nope\"").is_err());
    }
}
