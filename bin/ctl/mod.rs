//! `ringswitch ctl`: the control socket (server in the daemon, client in the CLI) and
//! the human rendering of its answers.

pub mod client;
pub mod render;
pub mod server;
pub mod table;

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{CtlArgs, CtlCommand};
use crate::control::{Request, Response};

/// Runs one `ctl` command: prints tables (or the JSON line with `--json`) on stdout; an
/// error answer goes to stderr and gives exit code 1.
pub fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let req = match args.command {
        CtlCommand::Ports => Request::Ports,
        CtlCommand::Fdb => Request::Fdb,
        CtlCommand::Mdb => Request::Mdb,
        CtlCommand::Stats => Request::Stats,
        CtlCommand::AddPort { spec } => Request::AddPort { spec },
        CtlCommand::DelPort { name } => Request::DelPort { name },
        CtlCommand::SetPort { name, change } => Request::SetPort { name, change },
    };
    let (line, resp) = client::call(&args.ctl, &req)?;
    let mut out = std::io::stdout().lock();
    if let Response::Error { message } = &resp {
        if args.json {
            writeln!(out, "{line}")?;
        }
        eprintln!("ringswitch ctl: {message}");
        return Ok(ExitCode::from(1));
    }
    if args.json {
        writeln!(out, "{line}")?;
    } else {
        out.write_all(render::response(&resp).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
