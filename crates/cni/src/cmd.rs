//! ADD, DEL, CHECK, VERSION, STATUS and GC (CNI 1.1.0 SPEC.md, "CNI operations"). No
//! state of our own: the host end's name follows from (container id, ifname) and its
//! alias names its owner (for GC), the port is the daemon's, the addresses are the IPAM
//! plugin's.

use std::path::Path;

use crate::config::{NetConf, SUPPORTED_VERSIONS};
use crate::daemon::Daemon;
use crate::env::Env;
use crate::error::{code, CniError, Result};
use crate::link::{self, Netns};
use crate::result::{self, Cidr, CniResult, Interface};
use crate::{ipam, names};

/// VERSION's answer.
pub fn version() -> String {
    serde_json::json!({
        "cniVersion": SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1],
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

fn netns_path(env: &Env) -> Result<&Path> {
    env.netns
        .as_deref()
        .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is not set"))
}

/// What a failed ADD has done so far, undone in reverse order.
struct Undo<'a> {
    env: &'a Env,
    ipam: Option<(&'a Path, &'a [u8])>,
    veth: Option<&'a str>,
}

impl Undo<'_> {
    fn run(self) {
        if let Some(host) = self.veth {
            if let Err(e) = link::delete(host) {
                eprintln!("ringswitch-cni: undo: {e}");
            }
        }
        if let Some((plugin, raw)) = self.ipam {
            if let Err(e) = ipam::exec(plugin, "DEL", raw) {
                eprintln!(
                    "ringswitch-cni: undo of IPAM for {}: {e}",
                    self.env.container_id
                );
            }
        }
    }
}

/// ADD: everything is validated and the daemon asked for before anything is made; then
/// IPAM, the veth pair, the container's addresses and routes, and the port. A failure
/// undoes what this invocation made.
pub fn add(env: &Env, conf: &NetConf, raw: &[u8]) -> Result<CniResult> {
    let ns_path = netns_path(env)?;
    let ns = Netns::open(ns_path)?;
    let plugin = ipam::find(conf.ipam_plugin()?, &env.path)?;
    let mac = conf.container_mac(env.arg("MAC"))?;
    let host = names::host_ifname(&env.container_id, &env.ifname);
    let spec = conf.port_spec(&host, mac.as_deref())?;
    let daemon = Daemon::new(conf.control_socket());
    if daemon.port(&host)?.is_some() {
        return Err(CniError::new(
            code::DAEMON_REFUSED,
            format!("ringswitch already has a port {host} for this container and interface"),
        )
        .with_details("DEL it first"));
    }

    let ipam_result = ipam::parse_result(&ipam::exec(&plugin, "ADD", raw)?);
    let mut undo = Undo {
        env,
        ipam: Some((&plugin, raw)),
        veth: None,
    };
    let made = ipam_result.and_then(|ipam_result| {
        link::create_veth(&host, &env.ifname, ns_path, conf.mtu, mac.as_deref())?;
        undo.veth = Some(&host);
        link::set_alias(
            &host,
            &names::owner_alias(&conf.name, &env.container_id, &env.ifname),
        )?;
        let ctr = ns.run(|| configure_container(&env.ifname, &ipam_result))?;
        link::ip(&["link", "set", "dev", &host, "up"])?;
        let host_info = link::info(&host)?.ok_or_else(|| {
            CniError::new(
                code::LINK_FAILED,
                format!("{host} vanished after it was made"),
            )
        })?;
        daemon.add_port(&spec)?;
        Ok(result::build(
            &conf.cni_version,
            Interface {
                name: host.clone(),
                mac: Some(host_info.mac),
                ..Default::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: Some(ctr.mac),
                sandbox: Some(ns_path.display().to_string()),
                ..Default::default()
            },
            ipam_result,
            conf.dns.as_ref(),
        ))
    });
    if made.is_err() {
        undo.run();
    }
    made
}

/// Inside the container: IPAM's addresses on `ifname`, the link up, IPAM's routes.
fn configure_container(ifname: &str, ipam: &CniResult) -> Result<link::LinkInfo> {
    for ip in &ipam.ips {
        Cidr::parse(&ip.address)?;
        link::ip(&["addr", "add", &ip.address, "dev", ifname])?;
    }
    link::ip(&["link", "set", "dev", ifname, "up"])?;
    for r in &ipam.routes {
        Cidr::parse(&r.dst)?;
        let gw = result::route_gateway(r, &ipam.ips)?;
        let mut args = vec!["route", "add", r.dst.as_str()];
        if let Some(g) = &gw {
            args.extend(["via", g.as_str()]);
        }
        args.extend(["dev", ifname]);
        link::ip(&args)?;
    }
    link::info(ifname)?.ok_or_else(|| {
        CniError::new(
            code::LINK_FAILED,
            format!("{ifname} vanished in the container"),
        )
    })
}

/// DEL: the port, the veth (taking the container end with it) and the IPAM allocation,
/// each whether or not the others were there. Missing pieces are not errors; a real
/// failure is reported after every step was tried.
pub fn del(env: &Env, conf: &NetConf, raw: &[u8]) -> Result<()> {
    let host = names::host_ifname(&env.container_id, &env.ifname);
    let daemon = Daemon::new(conf.control_socket());
    let plugin = conf.ipam_plugin()?;
    let ipam = ipam::find(plugin, &env.path).and_then(|p| ipam::exec(&p, "DEL", raw));
    release(&daemon, &host, ipam.map(|_| ()))
}

/// Removes the port and the veth `host`, then reports the first failure of the two or
/// of `ipam` (the IPAM release the caller tried).
fn release(daemon: &Daemon, host: &str, ipam: Result<()>) -> Result<()> {
    let mut first: Option<CniError> = None;
    if let Err(e) = daemon.remove_port(host) {
        first.get_or_insert(e);
    }
    if let Err(e) = link::delete(host) {
        first.get_or_insert(e);
    }
    if let Err(e) = ipam {
        first.get_or_insert(e);
    }
    first.map_or(Ok(()), Err)
}

/// STATUS (CNI 1.1.0): ready for ADDs when the daemon answers on its control socket and
/// the IPAM plugin is installed (and, if it speaks 1.1.0, says it is ready itself).
/// Otherwise code 50, "the plugin is not available".
pub fn status(env: &Env, conf: &NetConf, raw: &[u8]) -> Result<()> {
    let unavailable = |e: CniError| CniError {
        code: code::NOT_AVAILABLE,
        ..e
    };
    let daemon = Daemon::new(conf.control_socket());
    daemon.ports().map_err(unavailable)?;
    let plugin = ipam::find(conf.ipam_plugin()?, &env.path).map_err(unavailable)?;
    if ipam::speaks(&plugin, "1.1.0")? {
        ipam::exec(&plugin, "STATUS", raw)?;
    }
    Ok(())
}

/// GC (CNI 1.1.0): every attachment of this network whose host end is still here (found
/// by its owner alias) but which is not in `cni.dev/valid-attachments` is released as DEL
/// would release it: port, veth, and the IPAM allocation (a DEL to the IPAM plugin
/// naming that container and interface). Then IPAM's own GC, if it speaks 1.1.0.
pub fn gc(env: &Env, conf: &NetConf, raw: &[u8]) -> Result<()> {
    let valid = conf.valid_attachments.as_deref().unwrap_or_default();
    let plugin = ipam::find(conf.ipam_plugin()?, &env.path)?;
    let daemon = Daemon::new(conf.control_socket());
    let mut first: Option<CniError> = None;
    for (host, alias) in link::aliases()? {
        let Some((network, cid, ifname)) = names::parse_owner_alias(&alias) else {
            continue;
        };
        // Another network's, a valid one, or a name that is not ours after all.
        if network != conf.name
            || valid
                .iter()
                .any(|a| a.container_id == cid && a.ifname == ifname)
            || names::host_ifname(cid, ifname) != host
        {
            continue;
        }
        let vars = [("CNI_CONTAINERID", cid), ("CNI_IFNAME", ifname)];
        let ipam = ipam::exec_with(&plugin, "DEL", raw, &vars).map(|_| ());
        if let Err(e) = release(&daemon, &host, ipam) {
            first.get_or_insert(e);
        }
    }
    if ipam::speaks(&plugin, "1.1.0")? {
        if let Err(e) = ipam::exec(&plugin, "GC", raw) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// CHECK: IPAM's CHECK, then the container interface (up, prevResult's MAC and
/// addresses), the host end (up) and the daemon's port.
pub fn check(env: &Env, conf: &NetConf, raw: &[u8]) -> Result<()> {
    let prev = conf.prev_result()?.ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult (the result of ADD)",
        )
    })?;
    let ns_path = netns_path(env)?;
    let ns = Netns::open(ns_path)?;
    let plugin = ipam::find(conf.ipam_plugin()?, &env.path)?;
    ipam::exec(&plugin, "CHECK", raw)?;
    let failed = |msg: String| CniError::new(code::CHECK_FAILED, msg);

    let sandbox = ns_path.display().to_string();
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox.as_deref() == Some(sandbox.as_str()))
        .ok_or_else(|| {
            failed(format!(
                "prevResult has no interface {} in {sandbox}",
                env.ifname
            ))
        })?;
    let want = &prev.interfaces[idx];
    let have = ns
        .run(|| link::info(&env.ifname))?
        .ok_or_else(|| failed(format!("{} is missing in {sandbox}", env.ifname)))?;
    if !have.up {
        return Err(failed(format!("{} is down in {sandbox}", env.ifname)));
    }
    if let Some(m) = &want.mac {
        if !m.eq_ignore_ascii_case(&have.mac) {
            return Err(failed(format!(
                "{} has MAC {}, ADD gave {m}",
                env.ifname, have.mac
            )));
        }
    }
    for ip in prev.ips.iter().filter(|ip| ip.interface == Some(idx)) {
        let c = Cidr::parse(&ip.address)?;
        if !have.addrs.contains(&c) {
            return Err(failed(format!(
                "{} lacks address {}",
                env.ifname, ip.address
            )));
        }
    }

    let host = names::host_ifname(&env.container_id, &env.ifname);
    match link::info(&host)? {
        Some(h) if h.up => {}
        Some(_) => return Err(failed(format!("host end {host} is down"))),
        None => return Err(failed(format!("host end {host} is missing"))),
    }
    let daemon = Daemon::new(conf.control_socket());
    if daemon.port(&host)?.is_none() {
        return Err(failed(format!(
            "ringswitch on {} has no port {host}",
            daemon.socket().display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lists_what_we_support() {
        let v: serde_json::Value = serde_json::from_str(&version()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]})
        );
    }
}
