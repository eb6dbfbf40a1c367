//! `cargo xtask guest-image [--force]`: the test guest for the end-to-end tests.
//!
//! A Debian cloud kernel (fetched with `apt-get download`, unpacked with `dpkg -x`, never
//! installed) and an initramfs with static busybox, the virtio-net modules, iproute2's
//! `ip`, iperf3, ethtool and socat (each with the shared libraries `ldd` names) and the
//! /init in `guest/init.sh`. Everything is cached under `target/guest/`:
//!
//! - the kernel package is fetched once; `--force` looks for a newer one (apt-get update);
//! - the initramfs is rebuilt only when its inputs change (init script, kernel, and the
//!   size/mtime of every host file copied in), recorded in `initramfs.stamp`.
//!
//! Outputs are written to a temporary name and renamed, so two concurrent builders (e.g.
//! two test binaries) never see a half-written image. Prints `kernel=PATH` and
//! `initramfs=PATH` on stdout (the e2e harness parses these two lines).

pub(crate) mod cpio;

use anyhow::{bail, Context, Result};
use cpio::{Archive, Node};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The /init script (busybox sh); its protocol is described in docs/design/e2e.md.
const INIT: &str = include_str!("guest/init.sh");

/// Shell helpers for scenario scripts (`ip`, `mrecv`, `msend`), installed as /etc/rs-profile.
const PROFILE: &str = include_str!("guest/rs-profile.sh");

/// Bumped when the layout of the initramfs changes in a way the stamp cannot see.
const FORMAT: u32 = 1;

/// virtio-net and what it needs, in load order: there is no modules.dep in the image, so
/// /init insmods exactly these files in this order.
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Host programs copied into the guest (path in the host = path in the guest).
const PROGRAMS: &[&str] = &[
    "/usr/sbin/ip",
    "/usr/bin/iperf3",
    "/usr/sbin/ethtool",
    "/usr/bin/socat",
];

/// Debian packages providing busybox and `PROGRAMS`.
const PACKAGES: &[&str] = &["busybox-static", "iproute2", "iperf3", "ethtool", "socat"];

/// Kernel packages look like linux-image-6.1.0-<abi>-cloud-amd64-unsigned.
const KERNEL_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_SUFFIX: &str = "-cloud-amd64-unsigned";

/// The built image.
pub struct Image {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// Entry point of `cargo xtask guest-image [--force]`.
pub fn build(args: &[String]) -> Result<()> {
    let mut force = false;
    for a in args {
        match a.as_str() {
            "--force" => force = true,
            other => bail!("guest-image: unknown argument {other:?} (only --force)"),
        }
    }
    let dir = crate::workspace_root().join("target").join("guest");
    let image = build_image(&dir, force)?;
    println!("kernel={}", image.kernel.display());
    println!("initramfs={}", image.initramfs.display());
    Ok(())
}

/// Builds (or reuses) kernel and initramfs under `dir`.
pub fn build_image(dir: &Path, force: bool) -> Result<Image> {
    crate::deps::ensure(PACKAGES)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let kernel = ensure_kernel(dir, force)?;
    let initramfs = dir.join("initramfs.cpio");
    let mut files = host_files()?;
    files.insert(PathBuf::from("/bin/busybox"));
    let stamp = stamp(&kernel, &files)?;
    let stamp_path = dir.join("initramfs.stamp");
    let cached = std::fs::read_to_string(&stamp_path).ok();
    if force || !initramfs.exists() || cached.as_deref() != Some(stamp.as_str()) {
        eprintln!("xtask: building {}", initramfs.display());
        let archive = assemble(&kernel, &files)?;
        let tmp = dir.join(format!("initramfs.cpio.tmp{}", std::process::id()));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        archive.write_to(&mut out)?;
        std::io::Write::flush(&mut out)?;
        drop(out);
        std::fs::rename(&tmp, &initramfs)?;
        std::fs::write(&stamp_path, &stamp)?;
    }
    Ok(Image {
        kernel: kernel.vmlinuz,
        initramfs,
    })
}

/// An unpacked kernel package.
struct Kernel {
    /// Unpacked package root (contains boot/ and lib/modules/).
    root: PathBuf,
    vmlinuz: PathBuf,
}

/// Returns the cached kernel, or fetches the newest one (always with `force`).
fn ensure_kernel(dir: &Path, force: bool) -> Result<Kernel> {
    let current = dir.join("kernel.current");
    if !force {
        if let Ok(pkg) = std::fs::read_to_string(&current) {
            let root = dir.join("kernel").join(pkg.trim());
            if let Ok(k) = open_kernel(&root) {
                return Ok(k);
            }
        }
    }
    apt(&["update", "-q"])?;
    let out = Command::new("apt-cache")
        .args(["search", "--names-only"])
        .arg(format!(
            "^{}[0-9]+{}$",
            KERNEL_PREFIX.replace('.', "\\."),
            KERNEL_SUFFIX
        ))
        .output()
        .context("running apt-cache")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let Some(pkg) = newest_kernel(&listing) else {
        bail!("apt-cache found no {KERNEL_PREFIX}*{KERNEL_SUFFIX} package (is bookworm in sources.list?)");
    };
    let root = dir.join("kernel").join(&pkg);
    if !root.join("boot").exists() {
        let debs = dir.join("debs");
        std::fs::create_dir_all(&debs)?;
        let mut c = Command::new("apt-get");
        c.args(["download", "-q", &pkg])
            .current_dir(&debs)
            .stdout(std::io::stderr());
        crate::run(&mut c)?;
        let deb = std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no {pkg}_*.deb"))?;
        let tmp = dir
            .join("kernel")
            .join(format!("{pkg}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        crate::run(
            Command::new("dpkg")
                .arg("-x")
                .arg(&deb)
                .arg(&tmp)
                .stdout(std::io::stderr()),
        )?;
        if std::fs::rename(&tmp, &root).is_err() {
            // Another builder won the race; its tree is identical.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    let k = open_kernel(&root)?;
    std::fs::write(&current, &pkg)?;
    Ok(k)
}

fn apt(args: &[&str]) -> Result<()> {
    let mut c = Command::new("apt-get");
    // stdout stays clean for the two result lines the harness parses.
    c.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(std::io::stderr());
    crate::run(&mut c)
}

/// The package with the highest ABI number among `apt-cache search` output lines.
fn newest_kernel(listing: &str) -> Option<String> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix(KERNEL_PREFIX)?
                .strip_suffix(KERNEL_SUFFIX)?;
            Some((abi.parse::<u32>().ok()?, name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
}

fn open_kernel(root: &Path) -> Result<Kernel> {
    let boot = root.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    Ok(Kernel {
        root: root.to_path_buf(),
        vmlinuz,
    })
}

/// Finds `<name>.ko` anywhere below `lib/modules/` of the kernel package.
fn find_module(kernel: &Kernel, name: &str) -> Result<PathBuf> {
    let want = format!("{name}.ko");
    let mut stack = vec![kernel.root.join("lib").join("modules")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()) == Some(want.as_str()) {
                return Ok(p);
            } else if p.file_name().and_then(|n| n.to_str()) == Some(&format!("{want}.xz")) {
                bail!(
                    "{} is compressed; the guest's insmod needs plain .ko",
                    p.display()
                );
            }
        }
    }
    bail!("module {want} not found in {}", kernel.root.display())
}

/// `PROGRAMS` plus every shared library `ldd` names for them.
fn host_files() -> Result<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    for prog in PROGRAMS {
        files.insert(PathBuf::from(prog));
        let out = Command::new("ldd")
            .arg(prog)
            .output()
            .with_context(|| format!("running ldd {prog}"))?;
        if !out.status.success() {
            bail!(
                "ldd {prog} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        files.extend(ldd_paths(&String::from_utf8_lossy(&out.stdout)));
    }
    Ok(files)
}

/// Absolute library paths in `ldd` output ("libx.so => /path (0x..)" or "/path (0x..)").
pub(crate) fn ldd_paths(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Identity of every input: a change of any of them rebuilds the initramfs.
fn stamp(kernel: &Kernel, files: &BTreeSet<PathBuf>) -> Result<String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    FORMAT.hash(&mut h);
    INIT.hash(&mut h);
    PROFILE.hash(&mut h);
    MODULES.hash(&mut h);
    kernel.root.hash(&mut h);
    for f in files {
        let m = std::fs::metadata(f).with_context(|| format!("{} is missing", f.display()))?;
        f.hash(&mut h);
        m.len().hash(&mut h);
        m.modified()?.hash(&mut h);
    }
    Ok(format!("{:016x}\n", h.finish()))
}

fn assemble(kernel: &Kernel, files: &BTreeSet<PathBuf>) -> Result<Archive> {
    let mut a = Archive::new();
    for d in [
        "proc", "sys", "dev", "tmp", "run", "etc", "usr/bin", "usr/sbin",
    ] {
        a.add(d, Node::Dir);
    }
    a.add("dev/console", Node::CharDev { major: 5, minor: 1 });
    a.add(
        "init",
        Node::File {
            mode: 0o755,
            data: INIT.as_bytes().to_vec(),
        },
    );
    a.add(
        "etc/rs-profile",
        Node::File {
            mode: 0o644,
            data: PROFILE.as_bytes().to_vec(),
        },
    );
    // The kernel runs /init with #!/bin/sh: without this link it panics "No working init".
    a.add(
        "bin/sh",
        Node::Symlink {
            target: "busybox".into(),
        },
    );
    for f in files {
        let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let path = f.to_string_lossy();
        a.add(&path, Node::File { mode: 0o755, data });
    }
    for m in MODULES {
        let p = find_module(kernel, m)?;
        let data = std::fs::read(&p)?;
        a.add(
            &format!("lib/modules/{m}.ko"),
            Node::File { mode: 0o644, data },
        );
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_abi_not_lexicographic() {
        let listing = "\
linux-image-6.1.0-9-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-56-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-10-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-99-cloud-amd64-dbg - debug symbols";
        assert_eq!(
            newest_kernel(listing).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64-unsigned")
        );
        assert_eq!(newest_kernel(""), None);
    }

    #[test]
    fn ldd_output_is_parsed() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)\n\
                   \tlibgone.so => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    /// The init script must at least parse: `sh -n` is busybox's own syntax check.
    #[test]
    fn init_script_parses() {
        let sh = if Path::new("/bin/busybox").exists() {
            ("/bin/busybox", vec!["sh", "-n", "-c", INIT])
        } else {
            ("sh", vec!["-n", "-c", INIT])
        };
        let out = Command::new(sh.0).args(&sh.1).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn init_loads_every_module_in_order() {
        let line = INIT
            .lines()
            .skip_while(|l| !l.starts_with("for m in virtio_ring"))
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let listed: Vec<&str> = line
            .split_whitespace()
            .map(|w| w.trim_end_matches(';'))
            .filter(|w| MODULES.contains(w))
            .collect();
        assert_eq!(listed, MODULES);
    }
}
