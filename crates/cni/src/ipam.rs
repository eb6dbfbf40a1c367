//! Delegation to the IPAM plugin (CNI 1.1.0 SPEC.md, "Section 4: Plugin Delegation"):
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

/// Runs `plugin` for `command` ("ADD", "DEL", "CHECK", "STATUS", "GC") with `stdin`;
/// returns its stdout.
pub fn exec(plugin: &Path, command: &str, stdin: &[u8]) -> Result<Vec<u8>> {
    exec_with(plugin, command, stdin, &[])
}

/// [`exec`] with `CNI_*` variables set for this call (GC's DEL of a stale attachment
/// names the container and interface our own environment does not have). The
/// configuration's `cniVersion` is lowered to the newest version the plugin speaks when
/// it does not speak ours: a 1.1.0 runtime can then still delegate to Debian's
/// host-local, which stops at 1.0.0 (the 1.1.0 additions are verbs, not fields IPAM reads).
pub fn exec_with(
    plugin: &Path,
    command: &str,
    stdin: &[u8],
    vars: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let lowered = lower_version(plugin, stdin)?;
    run(plugin, command, lowered.as_deref().unwrap_or(stdin), vars)
}

/// The configuration with `cniVersion` lowered for `plugin`, or None to send it as it is.
fn lower_version(plugin: &Path, stdin: &[u8]) -> Result<Option<Vec<u8>>> {
    let Ok(mut conf) = serde_json::from_slice::<serde_json::Value>(stdin) else {
        return Ok(None);
    };
    let ours = conf["cniVersion"].as_str().unwrap_or_default().to_string();
    // 1.0.0 is what every maintained IPAM plugin speaks; ask only about newer ones.
    if ours.is_empty() || ours == "1.0.0" {
        return Ok(None);
    }
    let theirs = supported_versions(plugin)?;
    if theirs.contains(&ours) {
        return Ok(None);
    }
    let Some(best) = theirs
        .iter()
        .filter(|v| version_key(v) < version_key(&ours))
        .max_by_key(|v| version_key(v))
    else {
        return Ok(None);
    };
    conf["cniVersion"] = serde_json::Value::String(best.clone());
    Ok(Some(conf.to_string().into_bytes()))
}

/// Whether `plugin` implements `version` (its VERSION answer lists it).
pub fn speaks(plugin: &Path, version: &str) -> Result<bool> {
    Ok(supported_versions(plugin)?.iter().any(|v| v == version))
}

fn supported_versions(plugin: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Versions {
        #[serde(rename = "supportedVersions", default)]
        supported: Vec<String>,
    }
    let out = run(plugin, "VERSION", b"{}", &[])?;
    // A plugin whose VERSION answer is unreadable is treated as speaking nothing newer
    // than what we send it (no lowering, no 1.1.0 verbs delegated).
    Ok(serde_json::from_slice::<Versions>(&out)
        .map(|v| v.supported)
        .unwrap_or_default())
}

/// "1.0.0" as (1, 0, 0); unparsable parts count as 0.
fn version_key(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

fn run(plugin: &Path, command: &str, stdin: &[u8], vars: &[(&str, &str)]) -> Result<Vec<u8>> {
    let io = |what: &str, e: std::io::Error| {
        CniError::new(
            code::IO_FAILURE,
            format!("IPAM plugin {}: {what}", plugin.display()),
        )
        .with_details(e.to_string())
    };
    let mut cmd = Command::new(plugin);
    cmd.env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| io("cannot run it", e))?;
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

#[cfg(test)]
mod version_tests {
    use super::version_key;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("1.0.0") < version_key("1.1.0"));
        assert!(version_key("0.4.0") < version_key("1.0.0"));
        assert!(version_key("0.10.0") > version_key("0.4.0"));
        assert_eq!(version_key("x"), (0, 0, 0));
    }
}
