//! The host end's name: derived from (container id, ifname) alone, so DEL and CHECK
//! find what ADD made without any state of their own.

/// `rs` + 12 hex digits of FNV-1a-64 over `container_id`, NUL, `ifname`: 14 bytes (Linux
/// allows 15). 48 bits make a collision between two live attachments of one host
/// negligible; FNV-1a is spelled out here because the name must never change between
/// plugin versions (a DEL after an upgrade must find the veth an older ADD made).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    format!("rs{:012x}", h >> 16)
}

/// The host end's alias (IFLA_IFALIAS), naming the attachment that owns it: GC (CNI
/// 1.1.0) lists the host ends by alias to find the attachments the runtime no longer has,
/// since the host name's hash cannot be read backwards. Neither a container id nor an
/// interface name may hold a `/`, so the last two fields split off unambiguously.
pub fn owner_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{network}/{container_id}/{ifname}")
}

const ALIAS_PREFIX: &str = "ringswitch-cni/";

/// (network, container id, ifname) of an alias [`owner_alias`] made.
pub fn parse_owner_alias(alias: &str) -> Option<(&str, &str, &str)> {
    let rest = alias.strip_prefix(ALIAS_PREFIX)?;
    let mut it = rest.rsplitn(3, '/');
    let ifname = it.next()?;
    let cid = it.next()?;
    let network = it.next()?;
    (!network.is_empty() && !cid.is_empty() && !ifname.is_empty()).then_some((network, cid, ifname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_alias_round_trips() {
        let a = owner_alias("my/net", "ctr-1", "eth0");
        assert_eq!(parse_owner_alias(&a), Some(("my/net", "ctr-1", "eth0")));
        assert_eq!(parse_owner_alias("ringswitch-cni/x/eth0"), None);
        assert_eq!(parse_owner_alias("someone else"), None);
    }

    #[test]
    fn deterministic_short_and_distinct() {
        let a = host_ifname("0123456789abcdef", "eth0");
        assert_eq!(a, host_ifname("0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("rs") && a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_ifname("0123456789abcdef", "eth1"));
        assert_ne!(a, host_ifname("0123456789abcdee", "eth0"));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(host_ifname("ab", "c"), host_ifname("a", "bc"));
        // Pinned: a changed derivation would orphan veths made by older versions.
        assert_eq!(host_ifname("c1", "eth0"), "rsf53f02b3bfe9");
        assert_eq!(
            host_ifname("", ""),
            format!("rs{:012x}", 0xaf63_bd4c_8601_b7df_u64 >> 16)
        );
    }
}
