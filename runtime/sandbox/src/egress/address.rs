//! Addresses a name may not lead a guest to: the host itself, the networks
//! behind it, and the cloud metadata service.
//!
//! An allowlisted name is only as good as the DNS that answers for it: a
//! name that resolves (or, between a check and a connect, rebinds) to
//! `127.0.0.1`, `10.0.0.5` or `169.254.169.254` would carry a guest past
//! the allowlist to the host's admin API, a private network or the
//! instance's credentials. So egress resolves a name once, refuses every
//! address [`is_internal`] unless the allowlist names that address itself
//! (an IP literal, on that port), and connects to an address it checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is one a public name must not resolve to: unspecified,
/// loopback, private (RFC 1918, unique-local), shared (CGNAT, where some
/// clouds keep their metadata service), link-local (the metadata address
/// `169.254.169.254` among them), multicast, broadcast, or reserved; and
/// IPv6 addresses that embed such an IPv4 address (mapped, compatible,
/// NAT64, 6to4).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || a == 0 // "this network", 0.0.0.0/8
        || ip.is_loopback() // 127.0.0.0/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || (a == 100 && (b & 0xc0) == 64) // shared address space, 100.64/10
        || ip.is_link_local() // 169.254/16, the metadata address
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18/15
        || ip.is_multicast() // 224/4
        || a >= 240 // reserved, 240/4, and the broadcast address
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        let [h1, h2] = high.to_be_bytes();
        let [l1, l2] = low.to_be_bytes();
        is_internal_v4(Ipv4Addr::new(h1, h2, l1, l2))
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || (segments[0] & 0xfe00) == 0xfc00 // unique-local, fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || ip.is_multicast() // ff00::/8
        // IPv4-compatible (deprecated), ::a.b.c.d
        || (segments[..6] == [0; 6] && embedded_v4(segments[6], segments[7]))
        // NAT64, 64:ff9b::/96, reaches the IPv4 address it embeds
        || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && embedded_v4(segments[6], segments[7]))
        // 6to4, 2002::/16, likewise
        || (segments[0] == 0x2002 && embedded_v4(segments[1], segments[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_host_private_networks_and_metadata_are_internal() {
        for internal in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200", // Alibaba Cloud's metadata service
            "169.254.169.254", // AWS, GCP, Azure metadata service
            "169.254.0.1",
            "192.0.0.170",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254", // AWS's IPv6 metadata service
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "2002:7f00:1::",      // 6to4 of 127.0.0.1
            "2002:c0a8:101::1",   // 6to4 of 192.168.1.1
        ] {
            assert!(is_internal(ip(internal)), "{internal}");
        }
    }

    #[test]
    fn public_addresses_are_not() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "169.253.255.255",
            "192.0.2.1", // documentation, but routable as far as a socket knows
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(!is_internal(ip(public)), "{public}");
        }
    }
}
