//! The `ringswitch` daemon.

// Wired in by the ctl server and the runtime as they land.
#[allow(dead_code)]
mod control;
#[allow(dead_code)]
mod glue;
#[allow(dead_code)]
mod runtime;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("demo") {
        eprintln!(
            "ringswitch demo (not built yet): will create three network namespaces joined \
             by veths, switch them with ringswitch in switch-only mode, generate traffic, \
             print a reachability matrix and clean up."
        );
    } else {
        eprintln!("ringswitch: the daemon is not built yet; see README.md for status");
    }
    std::process::exit(2);
}
