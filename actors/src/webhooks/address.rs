//! Where deliveries may go. A webhook URL is the caller's choice, so without a check a seller
//! could make the node post into its own network (server-side request forgery): the database,
//! a cloud's metadata service at 169.254.169.254, an admin port on loopback. Every address a
//! URL is or resolves to must be a public one, at registration and again at each delivery (a
//! name may resolve elsewhere later), unless `webhook_allow_private_addresses` is set.

use reqwest::Url;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2_048;

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// Not a URL deliveries can be posted to (422 `invalid`).
    #[error("url: {0}")]
    Malformed(String),
    /// Its host is or resolves to an internal address (422 `url_not_allowed`).
    #[error("url: {0}")]
    NotAllowed(String),
}

/// What kind of internal address `ip` is, or `None` for a public one.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let segments = v6.segments();
            let first = segments[0];
            let embedded =
                |high: u16, low: u16| Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8);
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("the unspecified address")
            } else if segments[..6] == [0; 6] {
                // IPv4-compatible (::a.b.c.d, deprecated): refused whatever it carries.
                Some("an IPv4-compatible address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private (unique local) address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if first & 0xffc0 == 0xfec0 {
                Some("a site-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if first == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0; 4] {
                // NAT64 (64:ff9b::/96) carries an IPv4 address that must pass the IPv4 checks.
                internal_v4(embedded(segments[6], segments[7]))
            } else if first == 0x64 && segments[1] == 0xff9b {
                Some("a local-use NAT64 address")
            } else if first == 0x2002 {
                // 6to4 carries an IPv4 address too.
                internal_v4(embedded(segments[1], segments[2]))
            } else if first == 0x2001 && segments[1] == 0 {
                // Teredo hides its IPv4 address; no public receiver needs one.
                Some("a Teredo address")
            } else {
                None
            }
        }
    }
}

fn internal_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = v4.octets();
    if v4.is_loopback() {
        Some("a loopback address")
    } else if v4.is_private() {
        Some("a private address")
    } else if v4.is_link_local() {
        Some("a link-local address")
    } else if v4.is_unspecified() || a == 0 {
        Some("the unspecified (\"this network\") range")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if (a, b) == (192, 0) && v4.octets()[2] == 0 {
        Some("an IETF protocol assignment (192.0.0.0/24)")
    } else if a == 198 && (18..20).contains(&b) {
        Some("a benchmarking address (198.18.0.0/15)")
    } else if v4.is_broadcast() || v4.is_multicast() || a >= 240 {
        Some("a broadcast, multicast or reserved address")
    } else {
        None
    }
}

/// Parses and checks `text` as a webhook URL, and resolves its host (within `resolve_wait`),
/// refusing it when any address it names is internal (unless `allow_private`).
pub async fn check(text: &str, allow_private: bool, resolve_wait: Duration) -> Result<Url, UrlRefusal> {
    let url = parse(text)?;
    let addresses = resolve(&url, resolve_wait).await?;
    if !allow_private {
        for address in addresses {
            if let Some(kind) = internal_kind(address.ip()) {
                // For a name, which address it resolved to is not said: that would map the
                // node's internal names for whoever asks.
                let what = match literal_ip(&url) {
                    Some(ip) => format!("{ip} is {kind}"),
                    None => "the host resolves to an internal address".to_owned(),
                };
                return Err(UrlRefusal::NotAllowed(format!("{what}; webhooks go to public addresses only")));
            }
        }
    }
    Ok(url)
}

/// The URL's shape alone: http or https, a host, no credentials, no fragment, not too long.
pub fn parse(text: &str) -> Result<Url, UrlRefusal> {
    let malformed = |why: &str| Err(UrlRefusal::Malformed(why.to_owned()));
    if text.len() > MAX_URL_LEN {
        return malformed("must be at most 2048 characters");
    }
    let Ok(url) = Url::parse(text.trim()) else { return malformed("must be an absolute http:// or https:// URL") };
    if !matches!(url.scheme(), "http" | "https") {
        return malformed("must start with http:// or https://");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return malformed("must name a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return malformed("must not carry credentials; authenticate deliveries by their signature");
    }
    if url.fragment().is_some() {
        return malformed("must not have a #fragment");
    }
    // As stored: percent-encoding and punycode make it longer than typed.
    if url.as_str().len() > MAX_URL_LEN {
        return malformed("must be at most 2048 characters once encoded");
    }
    Ok(url)
}

/// The IP address `url`'s host is written as, if it is one (`[::1]` included).
fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Every address `url`'s host names (itself, for an IP literal).
pub async fn resolve(url: &Url, wait: Duration) -> Result<Vec<SocketAddr>, UrlRefusal> {
    let port = url.port_or_known_default().unwrap_or(443);
    if let Some(ip) = literal_ip(url) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let Some(name) = url.host_str() else { return Err(UrlRefusal::Malformed("must name a host".into())) };
    match tokio::time::timeout(wait, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(found)) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                Err(UrlRefusal::Malformed(format!("{name} does not resolve")))
            } else {
                Ok(found)
            }
        }
        Ok(Err(_)) => Err(UrlRefusal::Malformed(format!("{name} does not resolve"))),
        Err(_) => Err(UrlRefusal::Malformed(format!("{name} did not resolve within {wait:?}"))),
    }
}

/// The resolver deliveries connect through: it drops every internal address a name resolves
/// to (checked at connection time, so a name re-pointed after registration gets nowhere).
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| internal_kind(a.ip()).is_none()).collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no public address").into();
                return Err(refused);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The checks that need no resolver, for an IP-literal URL at delivery time (the resolver is
/// not asked for those).
pub fn literal_refusal(url: &Url) -> Option<String> {
    let ip = literal_ip(url)?;
    internal_kind(ip).map(|kind| format!("{ip} is {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<&'static str> {
        internal_kind(text.parse().unwrap())
    }

    #[test]
    fn every_internal_range_is_refused_and_public_addresses_pass() {
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
            "fec0::1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "192.0.0.8",
            "198.18.0.1",
        ] {
            assert!(kind(internal).is_some(), "{internal} passed");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
            "64:ff9b::808:808",
        ] {
            assert_eq!(kind(public), None, "{public} refused");
        }
    }

    #[test]
    fn only_plain_http_urls_with_a_host_are_taken() {
        assert!(parse("https://hooks.example.com/bazaar?x=1").is_ok());
        assert!(parse("http://93.184.216.34:8080/in").is_ok());
        for bad in [
            "",
            "hooks.example.com/in",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "javascript:alert(1)",
        ] {
            assert!(matches!(parse(bad), Err(UrlRefusal::Malformed(_))), "{bad} taken");
        }
        assert!(parse(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[tokio::test]
    async fn loopback_and_metadata_urls_are_refused_unless_allowed() {
        let wait = Duration::from_secs(5);
        for url in ["http://127.0.0.1:9/x", "http://[::1]/x", "http://169.254.169.254/latest", "http://localhost:8080/"]
        {
            assert!(matches!(check(url, false, wait).await, Err(UrlRefusal::NotAllowed(_))), "{url}");
        }
        assert!(check("http://127.0.0.1:9/x", true, wait).await.is_ok());
        assert!(literal_refusal(&parse("http://10.0.0.1/").unwrap()).is_some());
        assert!(literal_refusal(&parse("http://hooks.example.com/").unwrap()).is_none());
    }
}
