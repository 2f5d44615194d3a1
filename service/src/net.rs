//! Which IP addresses Locus refuses to send to on a partner's behalf: loopback, private,
//! link-local, shared, NAT64, cloud metadata and every other special-purpose range. A sink
//! URL is a request to make our machines connect somewhere; without this check a partner
//! could point it at the bridge's own network (server-side request forgery).
//!
//! The reference is the IANA special-purpose address registries (RFC 6890 and updates) for
//! IPv4 and IPv6, and for IPv6 the address space registry: everything outside 2000::/3
//! (global unicast) is refused as reserved, so a block IANA has not assigned yet is refused
//! too. Blocks the registries mark globally reachable but that no webhook lives in (the
//! protocol anycast addresses of 192.0.0.0/24 and 2001::/23) are refused with their block.
//!
//! Embedded IPv4 addresses: an IPv4-mapped address (`::ffff:a.b.c.d`) is a dual-stack
//! socket's way of reaching the IPv4 host itself, so it is judged by that IPv4 address.
//! NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16) and Teredo (2001::/32) are
//! refused whatever they embed: their packets are carried by a translator or relay we do
//! not control, and a local-use NAT64 prefix maps to whatever its operator chose, so the
//! embedded address does not tell where the connection ends. (An IPv6-only deployment
//! behind DNS64 therefore cannot reach IPv4-only webhooks; such a site sets the private
//! switch or gives the bridge an IPv4 route.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is refused as a destination, or `None` for a public unicast address.
///
/// Reasons are short names of the range ("loopback", "private", "link-local", "cloud
/// metadata", "NAT64", ...), meant to follow "the address is ..." in an error message.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// What sink URLs the operator allows beyond public `https://`: both services read the
/// same two switches, so a URL ingest accepts at registration is one the bridge sends to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct SinkTargetSettings {
    /// Accept `http://` sink URLs (deliveries unencrypted). For a local receiver during
    /// development; never in production.
    #[arg(
        id = "sink_allow_http",
        long = "sink-allow-http",
        env = "LOCUS_SINK_ALLOW_HTTP",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub allow_http: bool,

    /// Accept sink hosts on special addresses ([`special_address`]: loopback, private,
    /// link-local, metadata, ...), literal or resolved. For a receiver on this machine or
    /// the private network; never where tenants are not trusted with the network.
    #[arg(
        id = "sink_allow_private",
        long = "sink-allow-private",
        env = "LOCUS_SINK_ALLOW_PRIVATE",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub allow_private: bool,
}

impl SinkTargetSettings {
    /// Both switches on: what the local demo and the tests (receivers on 127.0.0.1) need.
    pub fn permissive() -> Self {
        Self {
            allow_http: true,
            allow_private: true,
        }
    }
}

/// The special ones among `addrs`, each with why, or an empty list when all are public.
pub fn special_addresses(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<(IpAddr, &'static str)> {
    let mut refused: Vec<(IpAddr, &'static str)> = Vec::new();
    for ip in addrs {
        if let Some(why) = special_address(ip)
            && !refused.iter().any(|(seen, _)| *seen == ip)
        {
            refused.push((ip, why));
        }
    }
    refused
}

/// `127.0.0.1 is loopback, ::1 is loopback`: refused addresses as an error message lists them.
pub fn describe(refused: &[(IpAddr, &'static str)]) -> String {
    refused
        .iter()
        .map(|(ip, why)| format!("{ip} is {why}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `ip` lies in `prefix/len`.
fn in_v4(ip: Ipv4Addr, prefix: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(prefix)) & mask
}

/// Whether `ip` lies in `prefix/len`.
fn in_v6(ip: Ipv6Addr, prefix: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(prefix) & mask
}

/// The IPv4 special ranges, most specific first: the first match names the reason.
const V4_RANGES: &[([u8; 4], u32, &str)] = &[
    // Single addresses inside wider blocks, named for what they are.
    ([169, 254, 169, 254], 32, "cloud metadata"),
    // Alibaba Cloud's metadata service lives in the shared address space.
    ([100, 100, 100, 200], 32, "cloud metadata"),
    ([255, 255, 255, 255], 32, "broadcast"),
    ([0, 0, 0, 0], 8, "unspecified (this network, RFC 791)"),
    ([10, 0, 0, 0], 8, "private (RFC 1918)"),
    ([100, 64, 0, 0], 10, "shared address space (RFC 6598)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private (RFC 1918)"),
    ([192, 0, 0, 0], 24, "IETF protocol assignment (RFC 6890)"),
    ([192, 0, 2, 0], 24, "documentation (TEST-NET-1)"),
    (
        [192, 88, 99, 0],
        24,
        "6to4 relay anycast (deprecated, RFC 7526)",
    ),
    ([192, 168, 0, 0], 16, "private (RFC 1918)"),
    ([198, 18, 0, 0], 15, "benchmarking (RFC 2544)"),
    ([198, 51, 100, 0], 24, "documentation (TEST-NET-2)"),
    ([203, 0, 113, 0], 24, "documentation (TEST-NET-3)"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved (RFC 1112)"),
];

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    V4_RANGES
        .iter()
        .find(|(prefix, len, _)| in_v4(ip, *prefix, *len))
        .map(|(_, _, why)| *why)
}

/// `a:b:c:d:e:f:g:h` as an address (a `const` helper: `Ipv6Addr::new` is const too, this
/// only shortens the table).
const fn v6(s: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
}

/// The IPv6 special ranges inside or beside global unicast, most specific first. The
/// IPv4-mapped block is handled before this table; whatever is outside 2000::/3 and not
/// listed here is "reserved".
const V6_RANGES: &[(Ipv6Addr, u32, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0]), 128, "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1]), 128, "loopback"),
    // AWS's instance metadata service over IPv6 (inside the unique local block).
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]),
        128,
        "cloud metadata",
    ),
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96, "NAT64 (RFC 6052)"),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]),
        48,
        "NAT64 local-use (RFC 8215)",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0]),
        64,
        "discard-only (RFC 6666)",
    ),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32, "documentation"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20, "documentation"),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 32, "Teredo (RFC 4380)"),
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0]),
        48,
        "benchmarking (RFC 5180)",
    ),
    (
        v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0]),
        28,
        "ORCHID (RFC 4843)",
    ),
    (
        v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0]),
        28,
        "ORCHIDv2 (RFC 7343)",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0]),
        23,
        "IETF protocol assignment (RFC 2928)",
    ),
    (
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0]),
        16,
        "6to4 (deprecated, RFC 7526)",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]),
        7,
        "unique local (private, RFC 4193)",
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10, "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]),
        10,
        "site-local (deprecated, RFC 3879)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8, "multicast"),
];

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // ::ffff:a.b.c.d reaches a.b.c.d: the IPv4 answer is the answer.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    if let Some((_, _, why)) = V6_RANGES
        .iter()
        .find(|(prefix, len, _)| in_v6(ip, *prefix, *len))
    {
        return Some(why);
    }
    // IANA assigns unicast only from 2000::/3; the rest (IPv4-compatible ::/96,
    // IPv4-translated ::ffff:0:0:0/96, 5f00::/16 SRv6 and unassigned space) is not a host
    // on the Internet.
    if !in_v6(ip, v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3) {
        return Some("reserved (outside global unicast 2000::/3)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn why(s: &str) -> Option<&'static str> {
        special_address(s.parse().unwrap())
    }

    #[test]
    fn every_listed_ipv4_range_is_refused_at_both_ends_and_its_neighbours_are_not() {
        let cases = [
            ("0.0.0.0", "0.255.255.255", "unspecified"),
            ("10.0.0.0", "10.255.255.255", "private"),
            ("100.64.0.0", "100.127.255.255", "shared address space"),
            ("127.0.0.0", "127.255.255.255", "loopback"),
            ("169.254.0.0", "169.254.255.255", "link-local"),
            ("172.16.0.0", "172.31.255.255", "private"),
            ("192.0.0.0", "192.0.0.255", "IETF protocol assignment"),
            ("192.0.2.0", "192.0.2.255", "documentation"),
            ("192.88.99.0", "192.88.99.255", "6to4 relay"),
            ("192.168.0.0", "192.168.255.255", "private"),
            ("198.18.0.0", "198.19.255.255", "benchmarking"),
            ("198.51.100.0", "198.51.100.255", "documentation"),
            ("203.0.113.0", "203.0.113.255", "documentation"),
            ("224.0.0.0", "239.255.255.255", "multicast"),
            ("240.0.0.0", "255.255.255.254", "reserved"),
        ];
        for (first, last, reason) in cases {
            for ip in [first, last] {
                let got = why(ip).unwrap_or_else(|| panic!("{ip} accepted"));
                assert!(got.starts_with(reason), "{ip}: {got}");
            }
            let before = u32::from(first.parse::<Ipv4Addr>().unwrap()).checked_sub(1);
            let after = u32::from(last.parse::<Ipv4Addr>().unwrap()).checked_add(1);
            // The neighbours are public unless they start another listed range.
            for n in [before, after].into_iter().flatten().map(Ipv4Addr::from) {
                if V4_RANGES.iter().all(|(p, l, _)| !in_v4(n, *p, *l)) {
                    assert_eq!(special_v4(n), None, "{n} next to {reason}");
                }
            }
        }
    }

    #[test]
    fn metadata_and_broadcast_addresses_are_named_for_what_they_are() {
        assert_eq!(why("169.254.169.254"), Some("cloud metadata"));
        assert_eq!(why("100.100.100.200"), Some("cloud metadata"));
        assert_eq!(why("fd00:ec2::254"), Some("cloud metadata"));
        assert_eq!(why("::ffff:169.254.169.254"), Some("cloud metadata"));
        assert_eq!(why("255.255.255.255"), Some("broadcast"));
    }

    #[test]
    fn public_ipv4_addresses_are_accepted() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.88.98.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    #[test]
    fn every_listed_ipv6_range_is_refused() {
        let cases = [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("64:ff9b::a00:1", "NAT64"),
            // NAT64 of a public address is refused too: the translator connects for us.
            ("64:ff9b::808:808", "NAT64"),
            ("64:ff9b:1::1", "NAT64 local-use"),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "NAT64 local-use"),
            ("100::", "discard-only"),
            ("100::ffff:ffff:ffff:ffff", "discard-only"),
            ("2001::1", "Teredo"),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", "Teredo"),
            ("2001:1::1", "IETF protocol assignment"),
            ("2001:2::1", "benchmarking"),
            ("2001:10::1", "ORCHID"),
            ("2001:20::1", "ORCHIDv2"),
            ("2001:1ff:ffff::1", "IETF protocol assignment"),
            ("2001:db8::1", "documentation"),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"),
            ("3fff::1", "documentation"),
            ("2002::1", "6to4"),
            ("2002:808:808::1", "6to4"),
            ("fc00::1", "unique local"),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique local"),
            ("fe80::1", "link-local"),
            ("febf:ffff::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"),
            // IPv4-compatible (deprecated) and IPv4-translated: not global unicast.
            ("::127.0.0.1", "reserved"),
            ("::8.8.8.8", "reserved"),
            ("::ffff:0:808:808", "reserved"),
            ("5f00::1", "reserved"),
            ("4000::1", "reserved"),
        ];
        for (ip, reason) in cases {
            let got = why(ip).unwrap_or_else(|| panic!("{ip} accepted"));
            assert!(got.starts_with(reason), "{ip}: {got}");
        }
    }

    #[test]
    fn public_ipv6_addresses_are_accepted() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "2001:200::1",
            "2003::1",
            "2600::1",
            "3ffe::1",
            "3fff:1000::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    /// The listed CIDR blocks as (prefix as u32, length).
    fn v4_blocks() -> Vec<(u32, u32)> {
        V4_RANGES
            .iter()
            .map(|(p, l, _)| (u32::from(Ipv4Addr::from(*p)), *l))
            .collect()
    }

    fn v6_blocks() -> Vec<(u128, u32)> {
        V6_RANGES
            .iter()
            .map(|(p, l, _)| (u128::from(*p), *l))
            .collect()
    }

    #[test]
    fn special_addresses_are_listed_once_each_with_their_range() {
        let addrs = ["127.0.0.1", "8.8.8.8", "::1", "127.0.0.1", "10.0.0.1"]
            .map(|s| s.parse::<IpAddr>().unwrap());
        let refused = special_addresses(addrs);
        assert_eq!(
            describe(&refused),
            "127.0.0.1 is loopback, ::1 is loopback, 10.0.0.1 is private (RFC 1918)"
        );
        assert!(special_addresses(["8.8.8.8".parse().unwrap()]).is_empty());
    }

    proptest! {
        #[test]
        fn every_address_inside_a_listed_ipv4_block_is_refused(
            block in proptest::sample::select(v4_blocks()),
            host in any::<u32>(),
        ) {
            let (prefix, len) = block;
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            let ip = Ipv4Addr::from((prefix & mask) | (host & !mask));
            prop_assert!(special_v4(ip).is_some(), "{ip} accepted");
        }

        #[test]
        fn every_address_inside_a_listed_ipv6_block_is_refused(
            block in proptest::sample::select(v6_blocks()),
            host in any::<u128>(),
        ) {
            let (prefix, len) = block;
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            let ip = Ipv6Addr::from((prefix & mask) | (host & !mask));
            prop_assert!(special_v6(ip).is_some(), "{ip} accepted");
        }

        #[test]
        fn an_ipv4_mapped_address_gets_the_ipv4_answer(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            prop_assert_eq!(special_v6(v4.to_ipv6_mapped()), special_v4(v4));
        }

        #[test]
        fn random_ipv4_addresses_outside_the_blocks_are_accepted(raw in any::<u32>()) {
            let ip = Ipv4Addr::from(raw);
            let listed = V4_RANGES.iter().any(|(p, l, _)| in_v4(ip, *p, *l));
            prop_assert_eq!(special_v4(ip).is_none(), !listed, "{}", ip);
            // And std agrees on the ranges it knows.
            if ip.is_private() || ip.is_loopback() || ip.is_link_local()
                || ip.is_multicast() || ip.is_broadcast() || ip.is_documentation()
                || ip.is_unspecified()
            {
                prop_assert!(special_v4(ip).is_some(), "{ip} accepted");
            }
        }

        #[test]
        fn random_global_unicast_ipv6_outside_the_blocks_is_accepted(raw in any::<u128>()) {
            // Force the address into 2000::/3.
            let ip = Ipv6Addr::from((raw & (u128::MAX >> 3)) | (1u128 << 125));
            let listed = V6_RANGES.iter().any(|(p, l, _)| in_v6(ip, *p, *l));
            prop_assert_eq!(special_v6(ip).is_none(), !listed, "{}", ip);
        }

        #[test]
        fn ipv6_outside_global_unicast_is_always_refused(raw in any::<u128>()) {
            let ip = Ipv6Addr::from(raw);
            let global = in_v6(ip, v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3);
            if !global && ip.to_ipv4_mapped().is_none() {
                prop_assert!(special_v6(ip).is_some(), "{ip} accepted");
            }
        }
    }
}
