//! The one `procwatch` binary: parses flags, layers the config, and hands off to the library
//! crates. It holds no logic of its own beyond that glue.

mod cmd;
mod config;
#[cfg(feature = "server")]
mod config_tables;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// Per-process CPU and memory monitor.
///
/// Every setting is taken from, in order of precedence: the command-line flag, the
/// environment variable `PROCWATCH_<NAME>`, the TOML file given with `--config`.
#[derive(Debug, Parser)]
#[command(name = "procwatch", version, about, long_about)]
struct Cli {
    /// TOML config file (see procwatch.example.toml).
    #[arg(long, global = true, env = "PROCWATCH_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log line format.
    #[arg(long, global = true, env = "PROCWATCH_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: the size of the largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Sample every process and ship the batches to the server.
    Agent(cmd::agent::AgentArgs),
    /// The REST server: ingestion, storage, queries, alarms, dashboard.
    #[cfg(feature = "server")]
    Server(cmd::server::ServerArgs),
    /// The alarm service, and `alarm backtest` to score forecasters on traces.
    #[cfg(feature = "server")]
    Alarm(cmd::alarm::AlarmArgs),
    /// Server, a local agent and the alarm console in one process: start here.
    #[cfg(feature = "server")]
    Up(Box<cmd::up::UpArgs>),
    /// One screen of text from a server: hosts, top processes, active alarms.
    Status(cmd::status::StatusArgs),
    /// The hosts a server knows; `hosts retire NAME` for one gone for good.
    Hosts(cmd::hosts::HostsArgs),
    /// The agents a server hears from; `agents set HOST-GLOB key=value...` steers them.
    Agents(cmd::agents::AgentsArgs),
    /// A simulated fleet against a server: throughput, latency, errors, server RSS.
    Loadgen(cmd::loadgen::LoadgenArgs),
}

fn main() -> ExitCode {
    // The config file feeds the environment before clap parses, so precedence is
    // flag > PROCWATCH_* env > file, with no second code path.
    let from_file = match config::apply_config_file::<Cli>() {
        Ok(names) => names,
        Err(err) => {
            eprintln!("procwatch: {err:#}");
            return ExitCode::from(2);
        }
    };
    #[cfg(feature = "server")]
    if let Err(err) = config_tables::check_file() {
        eprintln!("procwatch: {err:#}");
        return ExitCode::from(2);
    }
    if let Err(err) = config::check_env::<Cli>(&from_file) {
        eprintln!("procwatch: {err:#}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.log_format);
    let result = match cli.command {
        Command::Agent(args) => cmd::agent::run(args),
        #[cfg(feature = "server")]
        Command::Server(args) => cmd::server::run(args),
        #[cfg(feature = "server")]
        Command::Alarm(args) => cmd::alarm::run(args),
        #[cfg(feature = "server")]
        Command::Up(args) => cmd::up::run(*args),
        Command::Status(args) => cmd::status::run(args),
        Command::Hosts(args) => cmd::hosts::run(args),
        Command::Agents(args) => cmd::agents::run(args),
        Command::Loadgen(args) => cmd::loadgen::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("procwatch: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("PROCWATCH_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal: log files and CI output stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
