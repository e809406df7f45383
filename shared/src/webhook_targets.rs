//! Where paycycle may deliver a partner's webhooks (issue 23 §1, §3). A partner names a URL and
//! paycycle's deliverer calls it from inside the deployer's AWS account: a URL aimed at the
//! account's own network (RFC 1918, loopback, link-local — the instance metadata service at
//! 169.254.169.254 —, unique-local IPv6, and names that are IP addresses in disguise) would turn
//! the deliverer into a server-side request forgery. Production takes only `https` URLs whose host
//! is a public name or a public address; the local stack, where time travel is allowed, also takes
//! `http` on loopback for its receiver. The deliverer checks again after DNS resolution (a public
//! name can resolve to a private address); this is the check at registration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("not a URL: {0}")]
    NotAUrl(String),
    #[error("an endpoint URL must be https")]
    NotHttps,
    #[error("an endpoint URL must not carry a user name or password")]
    Credentials,
    #[error("{0} is not a public address: webhooks are delivered to the internet only")]
    NotPublic(String),
}

/// Checks a partner's endpoint URL. `local` (the local stack: time travel allowed) also takes
/// `http://127.0.0.1:…` / `http://localhost:…` for its own receiver.
pub fn check_endpoint_url(raw: &str, local: bool) -> Result<Url, TargetError> {
    let url = Url::parse(raw.trim()).map_err(|e| TargetError::NotAUrl(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let host = url.host().ok_or_else(|| TargetError::NotAUrl("no host".into()))?;
    let loopback = match &host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    };
    if local && loopback && matches!(url.scheme(), "http" | "https") {
        return Ok(url);
    }
    if url.scheme() != "https" {
        return Err(TargetError::NotHttps);
    }
    let public = match &host {
        Host::Domain(d) => public_name(d),
        Host::Ipv4(ip) => public_v4(*ip),
        Host::Ipv6(ip) => public_v6(*ip),
    };
    if !public {
        return Err(TargetError::NotPublic(host.to_string()));
    }
    Ok(url)
}

/// Whether an address the deliverer resolved a name to may be called (checked again at delivery).
pub fn public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // A dotless name is resolved inside the VPC; these suffixes never leave it.
    let internal = ["localhost", ".localhost", ".internal", ".local", ".localdomain", ".home.arpa"];
    name.contains('.') && !internal.iter().any(|s| name == s.trim_start_matches('.') || name.ends_with(s))
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18.0.0/15
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    let s = ip.segments();
    let first = s[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || first == 0x2001 && s[1] == 0x0db8 // documentation
        // Forms that carry an IPv4 address a gateway forwards to: NAT64 (64:ff9b::/96 and the
        // local-use 64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32), IPv4-compatible (::/96).
        || (first == 0x64 && s[1] == 0xff9b)
        || first == 0x2002
        || (first == 0x2001 && s[1] == 0)
        || s[..6] == [0; 6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_endpoints_are_taken() {
        for ok in [
            "https://shop.example.com/hooks/paycycle",
            "https://203.0.113.9.nip.io/h",
            "https://8.8.8.8/h",
            "https://[2606:4700::1111]/h",
        ] {
            assert!(check_endpoint_url(ok, false).is_ok(), "{ok}");
        }
    }

    #[test]
    fn ssrf_targets_are_refused_in_production() {
        for bad in [
            "http://shop.example.com/h",
            "https://127.0.0.1/h",
            "https://localhost/h",
            "https://10.0.0.5/h",
            "https://172.16.3.4/h",
            "https://192.168.1.1/h",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/h",
            "https://0.0.0.0/h",
            "https://[::1]/h",
            "https://[fd00::1]/h",
            "https://[fe80::1]/h",
            "https://[::ffff:10.0.0.1]/h",
            "https://metadata.google.internal/h",
            "https://intranet/h",
            "https://user:pass@shop.example.com/h",
            "not a url",
        ] {
            assert!(check_endpoint_url(bad, false).is_err(), "{bad}");
        }
        // Decimal and hex spellings of 127.0.0.1 are parsed as the address they are.
        assert!(check_endpoint_url("https://2130706433/h", false).is_err());
        assert!(check_endpoint_url("https://0x7f000001/h", false).is_err());
    }

    #[test]
    fn the_local_stack_may_deliver_to_its_own_receiver_on_loopback_only() {
        assert!(check_endpoint_url("http://127.0.0.1:4100/hooks", true).is_ok());
        assert!(check_endpoint_url("http://localhost:4100/hooks", true).is_ok());
        assert!(check_endpoint_url("http://10.0.0.5/hooks", true).is_err(), "local is loopback, not the LAN");
        assert!(check_endpoint_url("http://127.0.0.1:4100/hooks", false).is_err(), "never in production");
    }

    #[test]
    fn resolved_addresses_are_checked_the_same_way() {
        assert!(public_address("93.184.216.34".parse().unwrap()));
        assert!(!public_address("169.254.169.254".parse().unwrap()));
        assert!(!public_address("::ffff:192.168.0.1".parse().unwrap()));
    }

    /// IPv6 forms that carry an IPv4 address a gateway may forward to: NAT64 (64:ff9b::/96 and
    /// the local-use 64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32) and IPv4-compatible
    /// (::/96). A dual-stack VPC with NAT64 would turn `[64:ff9b::a00:5]` into 10.0.0.5.
    #[test]
    fn ipv6_addresses_that_embed_an_ipv4_address_are_not_public() {
        for bad in ["64:ff9b::a00:5", "64:ff9b:1::a00:5", "2002:a00:5::1", "2001:0:4136:e378::1", "::a00:5"] {
            assert!(!public_address(bad.parse().unwrap()), "{bad}");
            assert!(check_endpoint_url(&format!("https://[{bad}]/h"), false).is_err(), "{bad}");
        }
        assert!(public_address("2606:4700::1111".parse().unwrap()));
    }
}
