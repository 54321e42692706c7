//! Refuses webhook targets on loopback, private, link-local and other internal addresses,
//! after DNS resolution: at creation, and again at every delivery through a resolver that
//! hands the connector only the addresses it checked (so DNS rebinding cannot slip through).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

use reqwest::Url;

/// The longest accepted URL.
pub const MAX_URL_LEN: usize = 2048;
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        // Carrier-grade NAT (100.64.0.0/10), benchmarking (198.18.0.0/15), reserved (240/4).
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        // IETF protocol assignments (192.0.0.0/24) and the old 6to4 relay anycast (192.88.99.0/24).
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        || o[0] >= 240
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    // 6to4 (2002::/16) carries an IPv4 address in its second and third segments; a relay
    // would forward to it.
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[..6].iter().all(|x| *x == 0) // IPv4-compatible ::a.b.c.d (deprecated)
        || (s[..4].iter().all(|x| *x == 0) && s[4] == 0xffff && s[5] == 0) // IPv4-translated
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 can reach IPv4 internals
        || (s[0] == 0x2001 && s[1] == 0) // Teredo: a tunnel to an IPv4 host, no webhook target
}

/// Whether a webhook may not be sent to `ip`.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// Parses a target URL: http(s), a host, no longer than [`MAX_URL_LEN`].
pub fn parse(url: &str) -> Result<Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let u = Url::parse(url).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".into());
    }
    Ok(u)
}

/// Appended to every refusal of an internal target: the setting that would allow it.
pub const HOW_TO_ALLOW: &str = " (to allow private and loopback targets, set \
    webhooks_allow_private = true, GATEHOUSE_WEBHOOKS_ALLOW_PRIVATE=true, or run \
    `gatehouse serve --dev`)";

/// The host of a URL as an IP address, when it is one.
fn literal_ip(u: &Url) -> Option<IpAddr> {
    let host = u.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// How webhook hosts are resolved: by the system resolver, or by the one DNS server named in
/// `webhooks_dns_server` (a resolver of the deployment's choice, or a test's stub server).
#[derive(Clone)]
pub enum Lookup {
    /// The operating system's resolver (`getaddrinfo`).
    System,
    /// One DNS server, over UDP (TCP for long answers).
    Server(Arc<TokioResolver>),
}

impl Lookup {
    /// The system resolver, or a resolver asking `server` only.
    pub fn new(server: Option<SocketAddr>) -> Self {
        let Some(server) = server else {
            return Lookup::System;
        };
        let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        let opts = builder.options_mut();
        // Both families: every address a connection could go to is checked.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = DNS_TIMEOUT;
        Lookup::Server(Arc::new(builder.build()))
    }

    /// Every address `host` resolves to, with `port`; an error says why there is none.
    async fn addrs(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = match self {
            Lookup::System => {
                tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port)))
                    .await
                    .map_err(|_| "could not be resolved in time".to_string())?
                    .map_err(|_| "could not be resolved".to_string())?
                    .collect()
            }
            Lookup::Server(r) => tokio::time::timeout(DNS_TIMEOUT, r.lookup_ip(host))
                .await
                .map_err(|_| "could not be resolved in time".to_string())?
                .map_err(|_| "could not be resolved".to_string())?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        if found.is_empty() {
            return Err("could not be resolved".into());
        }
        Ok(found)
    }
}

/// Checks a target: its literal address, or every address its name resolves to.
pub async fn check(u: &Url, allow_private: bool, lookup: &Lookup) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    if let Some(ip) = literal_ip(u) {
        return if is_forbidden(ip) {
            Err(format!(
                "points to a private, loopback or link-local address{HOW_TO_ALLOW}"
            ))
        } else {
            Ok(())
        };
    }
    let host = u.host_str().unwrap_or_default();
    let port = u.port_or_known_default().unwrap_or(443);
    let addrs = lookup.addrs(host, port).await?;
    if addrs.iter().any(|a| is_forbidden(a.ip())) {
        return Err(format!(
            "resolves to a private, loopback or link-local address{HOW_TO_ALLOW}"
        ));
    }
    Ok(())
}

/// reqwest's resolver for deliveries: resolves, and refuses a name with any forbidden
/// address among its answers (as the check at creation does), so the connection goes only
/// to addresses that were checked, and a name that now also points inside is not used.
pub struct GuardedResolver {
    /// `webhooks_allow_private`.
    pub allow_private: bool,
    /// `webhooks_dns_server`, or the system resolver.
    pub lookup: Lookup,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let lookup = self.lookup.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = lookup
                .addrs(&host, 0)
                .await
                .map_err(|why| format!("the host {why}"))?;
            if !allow_private && found.iter().any(|a| is_forbidden(a.ip())) {
                return Err(Box::<dyn std::error::Error + Send + Sync>::from(
                    "the host resolves to a private, loopback or link-local address",
                ));
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Checks a delivery's URL before sending: a literal address is checked here (the resolver
/// never sees it); a name is checked by [`GuardedResolver`] as it connects.
pub fn check_literal(u: &Url, allow_private: bool) -> Result<(), String> {
    match literal_ip(u) {
        Some(ip) if !allow_private && is_forbidden(ip) => Err(format!(
            "the target is a private, loopback or link-local address{HOW_TO_ALLOW}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::",
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2002:a00:1::",                         // 6to4 of 10.0.0.1
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "::ffff:0:a00:1",                       // IPv4-translated 10.0.0.1
            "192.0.0.8",
            "192.88.99.1",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
            "2002:5db8:d822::1", // 6to4 of 93.184.216.34
        ] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let u = parse("http://localhost:9/hook").unwrap();
        assert!(check(&u, false, &Lookup::System).await.is_err());
        assert!(check(&u, true, &Lookup::System).await.is_ok());
        assert!(parse("ftp://example.com").is_err());
        assert!(parse("not a url").is_err());
        let lit = parse("http://[::1]:80/").unwrap();
        assert!(check_literal(&lit, false).is_err());
    }
}
