//! Fuzz the daemon's text parsers a user or a ctl client reaches: the `--port` spec
//! syntax and `set-port` changes (bin/config/port.rs), the TOML config file
//! (bin/config/file.rs) and ctl socket request lines (the `Request` JSON of
//! bin/control.rs, as bin/ctl/server.rs parses and validates it).
//!
//! bin/ has no library target, so the modules are compiled into this target with
//! `#[path]`, exactly as they are (their tests excluded).
//!
//! Input: 1 byte parser selector, then the text.
//!
//! Invariants: an accepted port spec passes `normalize_spec` unchanged (the check the ctl socket
//! applies) and survives the JSON round trip the ctl socket puts it through; an accepted
//! request survives its own round trip.
#![no_main]
#![allow(dead_code, unused_imports)]

#[path = "../../bin/control.rs"]
mod control;

#[path = "../../bin/cli.rs"]
mod cli;

#[path = "shared/bin_config.rs"]
mod config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [sel, text @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    match sel % 4 {
        0 => {
            if let Ok(spec) = config::port::parse_port(text) {
                let again = config::port::normalize_spec(&spec).expect("a parsed spec is valid");
                assert_eq!(again, spec, "a parsed spec is already in the parser's form");
                let json = serde_json::to_string(&spec).expect("serializes");
                let back: control::PortSpec = serde_json::from_str(&json).expect("round trip");
                assert_eq!(back, spec);
            }
        }
        1 => {
            let _ = config::port::parse_change(text);
        }
        2 => {
            if let Ok(cfg) =
                config::file::FileConfig::parse(text, std::path::Path::new("/fuzz.toml"))
            {
                let _ = format!("{cfg:?}");
            }
        }
        _ => {
            if let Ok(req) = serde_json::from_str::<control::Request>(text.trim()) {
                if let control::Request::AddPort { spec } = &req {
                    let _ = config::port::normalize_spec(spec);
                }
                let json = serde_json::to_string(&req).expect("serializes");
                let back: control::Request = serde_json::from_str(&json).expect("round trip");
                assert_eq!(back, req);
            }
        }
    }
});
