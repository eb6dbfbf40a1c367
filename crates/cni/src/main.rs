//! `ringswitch-cni`: a CNI 1.1.0 plugin (1.0.0 configurations too) that attaches a container to a running
//! ringswitch. ADD makes a veth pair, puts one end in the container as `CNI_IFNAME`
//! with the delegated IPAM plugin's addresses and routes, and adds the host end to the
//! daemon as an afpacket port through its control socket; DEL undoes it (idempotent);
//! CHECK verifies it; STATUS says whether the daemon takes ADDs; GC releases the
//! attachments the runtime no longer lists. The runtime's parameters arrive in `CNI_*` variables and the
//! network configuration on stdin; the result or a CNI error object goes to stdout.

mod cmd;
mod config;
mod daemon;
mod env;
mod error;
mod ipam;
mod link;
mod names;
mod result;

use std::io::{Read, Write};
use std::process::ExitCode;

use config::NetConf;
use env::{Command, Env};
use error::{code, CniError, Result};

fn main() -> ExitCode {
    // The version errors are reported in: the configuration's once it is known.
    let mut version = config::SUPPORTED_VERSIONS[0].to_string();
    let out = run(&mut version);
    let mut stdout = std::io::stdout().lock();
    match out {
        Ok(text) => {
            if let Some(t) = text {
                let _ = writeln!(stdout, "{t}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            eprintln!("ringswitch-cni: {e}");
            ExitCode::from(1)
        }
    }
}

/// One invocation; Some(text) is printed on stdout.
fn run(version: &mut String) -> Result<Option<String>> {
    let env = Env::from_vars(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(Some(cmd::version()));
    }
    let mut raw = Vec::new();
    std::io::stdin().read_to_end(&mut raw).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            "cannot read the network configuration on stdin",
        )
        .with_details(e.to_string())
    })?;
    if let Some(v) = serde_json::from_slice::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
    {
        *version = v;
    }
    let conf = NetConf::parse(&raw)?;
    match env.command {
        Command::Add => {
            let r = cmd::add(&env, &conf, &raw)?;
            serde_json::to_string(&r).map(Some).map_err(|e| {
                CniError::new(code::IO_FAILURE, "cannot encode the result")
                    .with_details(e.to_string())
            })
        }
        Command::Del => cmd::del(&env, &conf, &raw).map(|()| None),
        Command::Check => cmd::check(&env, &conf, &raw).map(|()| None),
        Command::Version => Ok(Some(cmd::version())),
        Command::Status | Command::Gc if conf.cni_version == "1.0.0" => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "STATUS and GC need cniVersion 1.1.0",
        )),
        Command::Status => cmd::status(&env, &conf, &raw).map(|()| None),
        Command::Gc => cmd::gc(&env, &conf, &raw).map(|()| None),
    }
}
