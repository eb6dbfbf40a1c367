//! The CNI result (CNI 1.0.0 SPEC.md, "Section 5: Result Types"): what IPAM returns and
//! what ADD prints. Keys this plugin does not know are kept (`extra`), so a newer IPAM
//! plugin's route attributes reach the runtime unchanged.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{code, CniError, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path for a container interface; absent for a host interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR, e.g. "198.18.0.2/24".
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`; IPAM plugins leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// An address with its prefix length, e.g. "198.18.0.2/24".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr> {
        let bad = || {
            CniError::new(
                code::DECODE_FAILURE,
                format!("{s:?} is not an address/prefix"),
            )
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

/// The interface of the container in an ADD result (the host end is 0).
pub const CONTAINER_INTERFACE: usize = 1;

/// ADD's result: the host and container interfaces, IPAM's addresses assigned to the
/// container interface, IPAM's routes, and IPAM's DNS (else the configuration's).
pub fn build(
    cni_version: &str,
    host: Interface,
    container: Interface,
    ipam: CniResult,
    conf_dns: Option<&Dns>,
) -> CniResult {
    let dns = if ipam.dns.is_empty() {
        conf_dns.cloned().unwrap_or_default()
    } else {
        ipam.dns
    };
    CniResult {
        cni_version: cni_version.to_string(),
        interfaces: vec![host, container],
        ips: ipam
            .ips
            .into_iter()
            .map(|ip| IpConfig {
                interface: Some(CONTAINER_INTERFACE),
                ..ip
            })
            .collect(),
        routes: ipam.routes,
        dns,
    }
}

/// The next hop of `route` inside the container: its own `gw`, else the gateway of the
/// first address of the same family (as the reference plugins' `ipam.ConfigureIface`
/// does), else none (an on-link route).
pub fn route_gateway(route: &Route, ips: &[IpConfig]) -> Result<Option<String>> {
    if route.gw.is_some() {
        return Ok(route.gw.clone());
    }
    let v4 = Cidr::parse(&route.dst)?.addr.is_ipv4();
    Ok(ips
        .iter()
        .filter_map(|ip| ip.gateway.as_ref())
        .find(|g| g.parse::<IpAddr>().is_ok_and(|a| a.is_ipv4() == v4))
        .cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_LOCAL: &str = r#"{"cniVersion":"1.0.0",
        "ips":[{"address":"198.18.0.2/24","gateway":"198.18.0.1"},
               {"address":"2001:db8::2/64","gateway":"2001:db8::1"}],
        "routes":[{"dst":"0.0.0.0/0"},{"dst":"2001:db8:1::/48","gw":"2001:db8::9","mtu":1300}],
        "dns":{}}"#;

    #[test]
    fn builds_the_add_result_from_ipam() {
        let ipam: CniResult = serde_json::from_str(HOST_LOCAL).unwrap();
        let host = Interface {
            name: "rs0123456789ab".into(),
            mac: Some("02:00:00:00:00:01".into()),
            ..Default::default()
        };
        let ctr = Interface {
            name: "eth0".into(),
            mac: Some("02:00:00:00:00:02".into()),
            sandbox: Some("/run/netns/c1".into()),
            ..Default::default()
        };
        let dns = Dns {
            nameservers: vec!["198.18.0.1".into()],
            ..Default::default()
        };
        let r = build("1.0.0", host, ctr, ipam, Some(&dns));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "rs0123456789ab", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/c1"}
                ],
                "ips": [
                    {"address": "198.18.0.2/24", "gateway": "198.18.0.1", "interface": 1},
                    {"address": "2001:db8::2/64", "gateway": "2001:db8::1", "interface": 1}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0"},
                    {"dst": "2001:db8:1::/48", "gw": "2001:db8::9", "mtu": 1300}
                ],
                "dns": {"nameservers": ["198.18.0.1"]}
            })
        );
        // Round trip: CHECK reads this back as prevResult.
        let back: CniResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn route_gateways_follow_the_family() {
        let ipam: CniResult = serde_json::from_str(HOST_LOCAL).unwrap();
        let gw = |dst: &str| {
            route_gateway(
                &Route {
                    dst: dst.into(),
                    ..Default::default()
                },
                &ipam.ips,
            )
            .unwrap()
        };
        assert_eq!(gw("0.0.0.0/0").as_deref(), Some("198.18.0.1"));
        assert_eq!(gw("::/0").as_deref(), Some("2001:db8::1"));
        assert_eq!(
            route_gateway(&ipam.routes[1], &[]).unwrap().as_deref(),
            Some("2001:db8::9")
        );
        assert_eq!(route_gateway(&ipam.routes[0], &[]).unwrap(), None);
        assert!(Cidr::parse("198.18.0.2/33").is_err());
        assert!(Cidr::parse("198.18.0.2").is_err());
        assert_eq!(Cidr::parse("2001:db8::2/64").unwrap().prefix, 64);
    }
}
