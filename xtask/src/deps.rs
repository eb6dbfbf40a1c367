//! Debian packages the tests need, installed through apt when missing.

use anyhow::{bail, Result};
use std::process::Command;

/// Everything `cargo xtask test` needs on a fresh Debian bookworm machine.
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",        // ip netns / veth / tap for data-plane and demo tests
    "iputils-ping",    // ping inside test namespaces
    "iperf3",          // TCP streams in e2e tests
    "ethtool",         // offload checks
    "qemu-system-x86", // real guests (TCG)
    "busybox-static",  // guest initramfs
    "cpio",            // guest initramfs
    "dpdk-dev",        // dpdk-testpmd as an independent vhost-user peer
    "socat",           // multicast join/send inside guests and namespaces
    "python3",         // raw tagged frames in the uring-net VLAN test
    // host-local IPAM (/usr/lib/cni) for the CNI e2e test
    "containernetworking-plugins",
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing packages of `pkgs` (apt-get update first). Idempotent.
pub fn ensure(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let mut c = Command::new("apt-get");
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        crate::run(&mut c)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)?;
    let still: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "packages still missing after apt-get install: {}",
            still.join(" ")
        );
    }
    Ok(())
}
