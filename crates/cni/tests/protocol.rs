//! The plugin binary as a runtime sees it, for what needs neither root nor a daemon:
//! VERSION, and the spec's error object for bad environments and configurations (CNI
//! 1.0.0 SPEC.md, "Error"). The full ADD/CHECK/DEL path is tests/e2e_cni.rs at the
//! workspace root (it needs the daemon).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn plugin(env: &[(&str, &str)], stdin: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringswitch-cni"));
    c.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("running ringswitch-cni");
    // The plugin may exit before reading (a bad environment): EPIPE is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// The error object printed on stdout by a failed invocation (which must exit non-zero).
fn error(env: &[(&str, &str)], stdin: &str) -> Value {
    let o = plugin(env, stdin);
    assert!(!o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    assert!(v["msg"].is_string(), "{v}");
    v
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "protocol-test"),
    ("CNI_NETNS", "/proc/self/ns/net"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/bin:/usr/bin"),
];

#[test]
fn version() {
    let o = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["1.0.0", "1.1.0"])
    );
}

#[test]
fn errors_are_the_spec_error_object_with_its_codes() {
    let conf = |extra: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"ringswitch-cni",
                "controlSocket":"/nonexistent/ctl.sock","ipam":{{"type":"true"}}{extra}}}"#
        )
    };
    // Environment: code 4.
    assert_eq!(error(&[], &conf(""))["code"], 4);
    let v = error(&[("CNI_COMMAND", "STATUS")], &conf(""));
    assert_eq!(v["code"], 4);
    // Not JSON: 6. Wrong shape: 7. Version we do not speak: 1, reported in that version.
    assert_eq!(error(ADD, "{")["code"], 6);
    assert_eq!(error(ADD, &conf(r#","mtu":"large""#))["code"], 7);
    let v = error(ADD, &conf("").replace("1.0.0", "0.3.1"));
    assert_eq!(
        (v["code"].as_u64(), v["cniVersion"].as_str()),
        (Some(1), Some("0.3.1"))
    );
    // A namespace that does not exist: container unknown, 3.
    let mut env = ADD.to_vec();
    env[2] = ("CNI_NETNS", "/nonexistent/netns");
    assert_eq!(error(&env, &conf(""))["code"], 3);
    // No daemon: try again later, 11, before IPAM ("true") or any link is touched.
    let v = error(ADD, &conf(""));
    assert_eq!(v["code"], 11, "{v}");
    assert_eq!(v["cniVersion"], "1.0.0");
    // DEL without a daemon, veth or namespace succeeds (IPAM "true" releases nothing).
    let mut del = ADD.to_vec();
    del[0] = ("CNI_COMMAND", "DEL");
    del.remove(2);
    let o = plugin(&del, &conf(""));
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout.is_empty());
    // STATUS (1.1.0) without a daemon: not available, 50; in a 1.0.0 configuration: 1.
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/bin:/usr/bin")];
    let v = error(&status, &conf("").replace("1.0.0", "1.1.0"));
    assert_eq!(
        (v["code"].as_u64(), v["cniVersion"].as_str()),
        (Some(50), Some("1.1.0")),
        "{v}"
    );
    assert_eq!(error(&status, &conf(""))["code"], 1);
}
