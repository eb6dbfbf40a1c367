//! A minimal writer for the "newc" cpio format, the only format the Linux kernel unpacks
//! as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Why our own writer rather than `find | cpio -o`: the archive needs a `/dev/console`
//! character device (otherwise /init starts without stdio), and creating device nodes in a
//! staging directory needs root and leaves them on the host. Writing the archive directly
//! also makes it reproducible (fixed owner, mtime 0, sorted paths) and needs no staging
//! tree at all.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// Regular file with its permission bits (e.g. 0o755).
    File {
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        target: String,
    },
    /// Character device (major, minor).
    CharDev {
        major: u32,
        minor: u32,
    },
}

/// An in-memory archive: paths (relative, no leading '/') to nodes. Parent directories are
/// added implicitly, and the sorted map order puts every parent before its children, as
/// the kernel's unpacker needs.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `path`, creating its parent directories.
    pub fn add(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = String::new();
        for comp in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.entries.entry(parent.clone()).or_insert(Node::Dir);
        }
        self.entries.insert(path, node);
    }

    /// Writes the archive in newc format, ending with the TRAILER!!! record.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for (ino, (path, node)) in (1u32..).zip(&self.entries) {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match node {
                Node::Dir => (0o040_755, 2, &[], (0, 0)),
                Node::File { mode, data } => (0o100_000 | (mode & 0o7777), 1, data, (0, 0)),
                Node::Symlink { target } => (0o120_777, 1, target.as_bytes(), (0, 0)),
                Node::CharDev { major, minor } => (0o020_600, 1, &[], (*major, *minor)),
            };
            write_record(out, ino, mode, nlink, path, data, rdev)?;
        }
        write_record(out, 0, 0, 1, "TRAILER!!!", &[], (0, 0))
    }
}

fn pad4(out: &mut impl Write, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..pad])
}

fn write_record(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
    rdev: (u32, u32),
) -> io::Result<()> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
    let namesize = name.len() + 1;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check: 6 + 13 * 8 = 110 bytes.
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0, rdev.0, rdev.1, 0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, header.len() + namesize)?;
    out.write_all(data)?;
    pad4(out, data.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        let mut a = Archive::new();
        a.add(
            "/init",
            Node::File {
                mode: 0o755,
                data: b"#!/bin/sh\necho hi\n".to_vec(),
            },
        );
        a.add(
            "bin/sh",
            Node::Symlink {
                target: "busybox".into(),
            },
        );
        a.add("dev/console", Node::CharDev { major: 5, minor: 1 });
        a.add(
            "lib/x86_64-linux-gnu/libfoo.so.1",
            Node::File {
                mode: 0o644,
                data: vec![7; 5],
            },
        );
        let mut out = Vec::new();
        a.write_to(&mut out).unwrap();
        out
    }

    #[test]
    fn records_are_aligned_and_terminated() {
        let out = sample();
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        let tail = String::from_utf8_lossy(&out[out.len() - 16..]);
        assert!(tail.contains("TRAILER!!!"), "{tail}");
    }

    #[test]
    fn parents_are_created_before_children() {
        let mut a = Archive::new();
        a.add("a/b/c", Node::Dir);
        a.add("a-z", Node::Dir);
        let keys: Vec<&String> = a.entries.keys().collect();
        assert_eq!(keys, ["a", "a-z", "a/b", "a/b/c"]);
    }

    /// GNU cpio is the reference reader: it must list exactly our entries with the right
    /// types and sizes.
    #[test]
    fn gnu_cpio_reads_it() {
        if Command::new("cpio").arg("--version").output().is_err() {
            // The rule of tests/common/prereq.rs: under CI=true a missing tool fails.
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "missing prerequisite under CI=true: GNU cpio (cargo xtask deps)"
            );
            eprintln!("SKIPPED: missing prerequisite: GNU cpio (cargo xtask deps installs it)");
            return;
        }
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 8, "{listing}");
        assert!(lines
            .iter()
            .any(|l| l.starts_with("crw") && l.ends_with("dev/console")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("lrwx") && l.ends_with("bin/sh -> busybox")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.contains(" 18 ") && l.ends_with(" init")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("drwx") && l.ends_with(" lib/x86_64-linux-gnu")));
    }
}
