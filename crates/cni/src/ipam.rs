//! Delegation to the IPAM plugin (CNI 1.0.0 SPEC.md, "Section 4: Plugin Delegation"):
//! the plugin named by `ipam.type` is looked up in `CNI_PATH` and run with our
//! environment (only `CNI_COMMAND` replaced, for the undo of a failed ADD) and the same
//! configuration on stdin; its result or error object is ours.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::error::{code, CniError, Result};
use crate::result::CniResult;

/// The first executable file `name` in `dirs`.
pub fn find(name: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("IPAM plugin {name:?} not found in CNI_PATH"),
            )
            .with_details(format!("searched {dirs:?}"))
        })
}

/// Runs `plugin` for `command` ("ADD", "DEL", "CHECK") with `stdin`; returns its stdout.
pub fn exec(plugin: &Path, command: &str, stdin: &[u8]) -> Result<Vec<u8>> {
    let io = |what: &str, e: std::io::Error| {
        CniError::new(
            code::IO_FAILURE,
            format!("IPAM plugin {}: {what}", plugin.display()),
        )
        .with_details(e.to_string())
    };
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io("cannot run it", e))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin).map_err(|e| io("writing its stdin", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| io("waiting for it", e))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(plugin_error(plugin, &out.stdout, &out.stderr))
}

/// The delegate's error object, passed on as it is; anything else becomes an I/O error
/// that quotes what it printed.
fn plugin_error(plugin: &Path, stdout: &[u8], stderr: &[u8]) -> CniError {
    #[derive(Deserialize)]
    struct Wire {
        code: u32,
        msg: String,
        #[serde(default)]
        details: Option<String>,
    }
    match serde_json::from_slice::<Wire>(stdout) {
        Ok(w) => CniError {
            code: w.code,
            msg: format!("IPAM: {}", w.msg),
            details: w.details,
        },
        Err(_) => CniError::new(
            code::IO_FAILURE,
            format!("IPAM plugin {} failed", plugin.display()),
        )
        .with_details(format!(
            "{}{}",
            String::from_utf8_lossy(stdout),
            String::from_utf8_lossy(stderr)
        )),
    }
}

/// Parses the result of an IPAM ADD.
pub fn parse_result(stdout: &[u8]) -> Result<CniResult> {
    serde_json::from_slice(stdout).map_err(|e| {
        CniError::new(code::DECODE_FAILURE, "IPAM result is not a CNI result")
            .with_details(format!("{e}: {}", String::from_utf8_lossy(stdout)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegate_errors_pass_through() {
        let e = plugin_error(
            Path::new("/x/host-local"),
            br#"{"cniVersion":"1.0.0","code":11,"msg":"no free address","details":"range full"}"#,
            b"",
        );
        assert_eq!(e.code, 11);
        assert_eq!(e.msg, "IPAM: no free address");
        assert_eq!(e.details.as_deref(), Some("range full"));
        let e = plugin_error(Path::new("/x/p"), b"panic", b" at line 3");
        assert_eq!(e.code, code::IO_FAILURE);
        assert_eq!(e.details.as_deref(), Some("panic at line 3"));
    }

    #[test]
    fn finds_executables_only() {
        let dir = std::env::temp_dir().join(format!("rs-cni-ipam-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "").unwrap();
        let script = dir.join("fake-ipam");
        std::fs::write(&script, "#!/bin/sh\ncat >/dev/null\necho \"{\\\"cniVersion\\\":\\\"1.0.0\\\",\\\"ips\\\":[{\\\"address\\\":\\\"198.18.0.9/24\\\"}],\\\"cmd\\\":\\\"$CNI_COMMAND\\\"}\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = vec![PathBuf::from("/nonexistent"), dir.clone()];
        assert_eq!(find("plain", &dirs).unwrap_err().code, code::INVALID_CONFIG);
        let p = find("fake-ipam", &dirs).unwrap();
        let out = exec(&p, "DEL", b"{}").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cmd"], "DEL", "CNI_COMMAND replaced");
        let r = parse_result(&out).unwrap();
        assert_eq!(r.ips[0].address, "198.18.0.9/24");
        assert_eq!(
            parse_result(b"nope").unwrap_err().code,
            code::DECODE_FAILURE
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
