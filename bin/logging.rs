//! Logging through `tracing`: RUST_LOG filters (default `info`), human or JSON lines on
//! stderr (stdout belongs to command output such as `--check` and `ctl`).

use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("RUST_LOG={value}: {error}; use e.g. RUST_LOG=info or RUST_LOG=ringswitch=debug,info")]
    Filter { value: String, error: String },
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// The filter for a RUST_LOG value (None: unset → `info`). A bad directive is an error
/// rather than silently ignored: a typo in RUST_LOG otherwise hides the logs one wanted.
pub fn filter(rust_log: Option<&str>, default: LevelFilter) -> Result<EnvFilter, LogError> {
    let builder = EnvFilter::builder().with_default_directive(default.into());
    match rust_log {
        None => Ok(builder.parse_lossy("")),
        Some(v) => builder.parse(v).map_err(|e| LogError::Filter {
            value: v.to_string(),
            error: e.to_string(),
        }),
    }
}

/// Installs the global subscriber once per process; `default` applies when RUST_LOG is
/// unset (`info` for the daemon, `warn` for the demo, whose own output is the point).
pub fn init(format: LogFormat, default: LevelFilter) -> Result<(), LogError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(rust_log.as_deref().filter(|v| !v.is_empty()), default)?;
    // Colours only on a terminal: journald and log files must not get escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let r = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    r.map_err(|e| LogError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(filter(None, LevelFilter::INFO).unwrap().to_string(), "info");
        assert_eq!(filter(None, LevelFilter::WARN).unwrap().to_string(), "warn");
        assert!(filter(Some("ringswitch=debug,warn"), LevelFilter::INFO).is_ok());
        let e = filter(Some("ringswitch=loud"), LevelFilter::INFO)
            .unwrap_err()
            .to_string();
        assert!(e.contains("RUST_LOG=ringswitch=loud"), "{e}");
    }
}
