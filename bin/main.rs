//! The `ringswitch` daemon: `run`, `ctl`, `demo`, `man`, `completions`.
//!
//! This file only wires modules together: the CLI ([`cli`]), configuration
//! ([`config`]), the control socket ([`ctl`]), metrics ([`metrics`]), logging and
//! signals. The data plane sits behind [`control::Control`].

mod cli;
mod config;
mod control;
mod ctl;
mod demo;
mod logging;
mod metrics;
mod netns;
mod qmp;
mod runtime;
mod sdnotify;
mod signals;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use tracing_subscriber::filter::LevelFilter;

use cli::{Cli, Command, DemoArgs, ManArgs, RunArgs};
use control::Control;
use ctl::server::{CtlListener, CtlServer};
use metrics::MetricsServer;
use runtime::Runtime;
use signals::ShutdownSignals;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringswitch: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Demo(args) => demo(args),
        Command::Man(args) => man(args),
        Command::Completions(args) => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(args.shell, &mut Cli::command(), "ringswitch", &mut out);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ringswitch run`: validate everything before touching anything, bind the control
/// socket and the metrics port (so a second daemon fails before opening any port), start
/// the data plane, then serve until SIGINT/SIGTERM.
fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = config::resolve(&args)?;
    if args.check {
        for w in &plan.warnings {
            eprintln!("warning: {w}");
        }
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &plan)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    logging::init(plan.log_format, LevelFilter::INFO)?;
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    // Before any thread exists, so that every thread inherits the blocked mask.
    let signals = ShutdownSignals::block().context("blocking SIGINT/SIGTERM")?;

    config::prepare_port_sockets(&plan.options.ports)?;
    let ctl_listener = CtlListener::bind(&plan.ctl)?;
    let metrics_listener = plan
        .metrics
        .map(|addr| metrics::bind(addr, plan.metrics_allow_remote))
        .transpose()?;

    let rt = Runtime::start(plan.options.clone()).context("starting the data plane")?;
    let served = serve(&rt, ctl_listener, metrics_listener, &plan, signals);
    // Whatever happened while serving, stop the data plane: guests see link down and the
    // vhost-user sockets are closed.
    let ports = rt.ports();
    rt.shutdown();
    for p in ports.iter().filter(|p| p.kind == "vhost-user") {
        config::socket::remove_if_stale(Path::new(&p.name));
    }
    served?;
    tracing::info!("ringswitch stopped");
    Ok(ExitCode::SUCCESS)
}

/// The serving phase of [`run`]: ctl and metrics up, wait for a signal, take them down.
fn serve(
    rt: &Arc<Runtime>,
    ctl_listener: CtlListener,
    metrics_listener: Option<std::net::TcpListener>,
    plan: &config::RunPlan,
    signals: ShutdownSignals,
) -> anyhow::Result<()> {
    let control: Arc<dyn Control> = rt.clone();
    let mut ctl_server = CtlServer::start(ctl_listener, control.clone())?;
    let mut metrics_server = metrics_listener
        .map(|l| MetricsServer::start(l, control.clone()))
        .transpose()?;
    tracing::info!(
        ports = plan.options.ports.len(),
        ctl = %plan.ctl.display(),
        metrics = %metrics_server
            .as_ref()
            .map_or_else(|| "off".to_string(), |m| format!("http://{}/metrics", m.local_addr())),
        "ringswitch running"
    );
    // Every configured port was opened by Runtime::start and ctl answers: ready
    // (systemd Type=notify; nothing is sent outside a service manager).
    let ready = format!(
        "READY=1\nSTATUS=running with {} ports\n",
        plan.options.ports.len()
    );
    if let Err(e) = sdnotify::notify(&ready) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
    let sig = signals.wait().context("waiting for SIGINT/SIGTERM")?;
    let _ = sdnotify::notify("STOPPING=1\n");
    tracing::info!(signal = %sig, "shutting down (a second signal exits at once)");
    // A shutdown stuck on a misbehaving peer must not make the daemon unkillable by the
    // usual signals (they stay blocked): the second one ends the process.
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                eprintln!("ringswitch: {sig} during shutdown: exiting now");
                std::process::exit(1);
            }
        });
    ctl_server.shutdown();
    if let Some(m) = metrics_server.as_mut() {
        m.shutdown();
    }
    Ok(())
}

/// `ringswitch demo`: the lead's end-to-end show case (bin/demo.rs).
fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    logging::init(cli::LogFormat::Human, LevelFilter::WARN)?;
    demo::run(demo::DemoOptions {
        keep: args.keep,
        seconds: args.seconds,
        ctl: args.ctl,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `ringswitch man`: man pages generated from the CLI definition, so they never drift.
fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    match args.out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
