//! `procwatch up`: the server, a local agent and the alarm console in one process: what a
//! newcomer runs first (`cargo run --release -- up`).
//!
//! - **Server**: exactly `procwatch server` (same flags, same store, same alarm evaluator):
//!   the store in `--data-dir` (default `./procwatch-data`), listening on `--listen` (default
//!   `127.0.0.1:8000`; `--addr-file FILE` gets the bound address, for `--listen ...:0`).
//! - **Agent**: samples this machine every `--interval` (one value for the agent's sweeps and
//!   the server's staleness and alarm evaluation; default 10s), host name `--host` (default
//!   the hostname), spool in `--spool-dir` (default `DATA_DIR/spool`), shipping to the bound
//!   address over loopback with the server's write token when one is set. It takes the
//!   agent's delivery flags (`--spool-max-bytes`, `--retry-max`, ...) too; `--metrics-listen`
//!   and the server's `--tls-cert`/`--tls-key` are refused under `up` (run the services
//!   separately for those).
//! - **Alarm console**: follows the server's alarm stream over loopback (the same follower as
//!   `procwatch alarm`) and prints one line per transition on stdout
//!   (`RED   web-1 java cpu 93.1% > 80%`, coloured when stdout is a terminal, `--color`),
//!   and forwards to the `[[notifiers]]` of the `--config` file.
//! - Once listening it prints `procwatch is up: dashboard at http://127.0.0.1:8000/` on
//!   stdout (with `--listen 0.0.0.0:…` the URL shows 127.0.0.1; the server listens on every
//!   interface). Logs go to stderr.
//! - **Stop** (Ctrl-C / SIGINT or SIGTERM): the agent first (sweeping stops, what is spooled
//!   is delivered within 5 s, anything left stays in the spool for the next start), then the
//!   alarm console, then the server (requests in flight finish, the store is closed). Exit
//!   code 0 after a clean stop.
//! - Config file: `[server]`, `[agent]` and `[up]` sections are read (see
//!   `procwatch.example.toml`).

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use procwatch_agent::AgentConfig;
use procwatch_collector::{Collector, CollectorKind, CollectorOptions};
use procwatch_notify::follow::{dispatch, follow, FollowOptions};
use procwatch_notify::{console::Console, Notifier, NotifierSpec};
use serde::Deserialize;

use super::agent::ship::DeliveryArgs;
use super::agent::CollectorKindArg;
use super::server::ServerArgs;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    /// Host name of the local agent's batches [default: this machine's hostname].
    #[arg(long, env = "PROCWATCH_HOST", value_name = "NAME", help_heading = "Agent")]
    pub host: Option<String>,

    /// Spool directory of the local agent [default: DATA_DIR/spool].
    #[arg(long, env = "PROCWATCH_SPOOL_DIR", value_name = "DIR", help_heading = "Agent")]
    pub spool_dir: Option<PathBuf>,

    /// Which collector reads the processes: proc (Linux /proc) or sysinfo (portable).
    #[arg(long, env = "PROCWATCH_COLLECTOR", default_value = default_collector(), help_heading = "Agent")]
    pub collector: CollectorKindArg,

    /// Count kernel threads as processes.
    #[arg(long, env = "PROCWATCH_INCLUDE_KERNEL_THREADS", help_heading = "Agent")]
    pub include_kernel_threads: bool,

    /// Opt-in extra metrics of the local agent: io, fds, threads, ctxsw, owner, unit, all or
    /// none (as `procwatch agent --metrics`).
    #[arg(
        long,
        env = "PROCWATCH_METRICS",
        default_value = "none",
        value_name = "LIST",
        help_heading = "Agent"
    )]
    pub metrics: procwatch_collector::ExtraSet,

    /// Where procfs is mounted (proc collector).
    #[arg(
        long,
        env = "PROCWATCH_PROC_ROOT",
        default_value = "/proc",
        value_name = "DIR",
        help_heading = "Agent"
    )]
    pub proc_root: String,

    #[command(flatten, next_help_heading = "Agent delivery")]
    pub delivery: DeliveryArgs,

    /// Run the server and the alarm console only, without the local agent.
    #[arg(long, env = "PROCWATCH_NO_AGENT", help_heading = "Agent")]
    pub no_agent: bool,

    /// Colour the alarm lines by level: auto (when stdout is a terminal), always, never.
    #[arg(long, env = "PROCWATCH_COLOR", default_value = "auto", value_parser = ["auto", "always", "never"], help_heading = "Alarm console")]
    pub color: String,
}

fn default_collector() -> &'static str {
    match CollectorKind::default() {
        CollectorKind::Proc => "proc",
        CollectorKind::Sysinfo => "sysinfo",
    }
}

/// The address local clients (agent, alarm console, the printed URL) use to reach a server
/// bound to `addr`: the unspecified address (all interfaces) becomes loopback.
pub fn local_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// The `[[notifiers]]` of the `--config` file (exported as `PROCWATCH_CONFIG`).
fn config_notifiers() -> Result<Vec<NotifierSpec>> {
    #[derive(Deserialize)]
    struct Tables {
        #[serde(default)]
        notifiers: Vec<NotifierSpec>,
    }
    let Some(path) = std::env::var_os("PROCWATCH_CONFIG").map(PathBuf::from) else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let t: Tables =
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
    Ok(t.notifiers)
}

fn build_collector(args: &UpArgs) -> Result<Box<dyn Collector + Send>> {
    if args.collector == CollectorKindArg::Sysinfo && !args.metrics.is_empty() {
        bail!(
            "--metrics {} needs the proc collector (Linux /proc); the sysinfo collector collects no extra metrics",
            args.metrics
        );
    }
    let opts = CollectorOptions {
        include_kernel_threads: args.include_kernel_threads,
        per_pid: false,
        extras: args.metrics,
        ..Default::default()
    };
    #[cfg(target_os = "linux")]
    if args.collector == CollectorKindArg::Proc && args.proc_root != "/proc" {
        return procwatch_collector::new_proc_collector_at(&args.proc_root, opts)
            .context("cannot start the collector");
    }
    procwatch_collector::new_collector(args.collector.into(), opts)
        .context("cannot start the collector")
}

/// The local agent's spool without --spool-dir: in the data directory with the SQLite store;
/// with a store that has no data directory (memory, InfluxDB) a per-run directory under the
/// system's temp dir, so `up --store memory` leaves no ./procwatch-data behind.
fn default_spool(args: &UpArgs) -> std::path::PathBuf {
    match args.server.store {
        super::server::StoreKind::Sqlite => args.server.data_dir.join("spool"),
        _ => std::env::temp_dir().join(format!("procwatch-up-spool-{}", std::process::id())),
    }
}

/// The local agent's settings (mirrors `procwatch agent --server`, see `agent::ship`).
fn agent_config(args: &UpArgs, server: &str, host: String, token: Option<String>) -> AgentConfig {
    let spool_dir = args.spool_dir.clone().unwrap_or_else(|| default_spool(args));
    let mut cfg = AgentConfig::new(host, server, spool_dir);
    cfg.agent = super::agent::AGENT_ID.to_string();
    cfg.interval = args.server.interval;
    cfg.shipper.token = token;
    args.delivery.apply(&mut cfg);
    cfg.metrics = super::agent::sweep::metric_names(args.metrics);
    cfg.extras_supported = args.collector == CollectorKindArg::Proc;
    cfg
}

pub fn run(args: UpArgs) -> Result<()> {
    let config = super::server::server_config(&args.server)?;
    if args.server.interval < Duration::from_millis(10) {
        bail!("--interval must be at least 10ms");
    }
    if args.server.tls_cert.is_some() {
        bail!("procwatch up serves plain HTTP for its local agent; for TLS run `procwatch server --tls-cert ...` and agents");
    }
    if args.delivery.metrics_listen.is_some() {
        bail!(
            "--metrics-listen is not supported by `procwatch up`; the server's /metrics covers it"
        );
    }
    let host = match &args.host {
        Some(h) => h.clone(),
        None => procwatch_collector::hostname()
            .context("cannot read this machine's hostname; pass --host NAME")?,
    };
    let collector = if args.no_agent { None } else { Some(build_collector(&args)?) };
    let colour = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    let mut notifiers: Vec<Arc<dyn Notifier>> =
        vec![Arc::new(Console::new(std::io::stdout(), colour))];
    for spec in config_notifiers()? {
        notifiers.push(spec.build()?);
    }
    // The server's memory setup (see `server::cap_malloc_arenas`, `server::spawn_malloc_trim`).
    super::server::cap_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("procwatch-up")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        // Before anything announces readiness (address file, banner): a SIGINT right after
        // the banner must stop us cleanly, not kill us.
        let shutdown = super::signal::Shutdown::install()?;
        super::server::spawn_malloc_trim();
        // Bind first: a port in use must not leave a fresh ./procwatch-data behind.
        let listener = tokio::net::TcpListener::bind(&args.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.server.listen))?;
        let store = super::server::open_store(&args.server).await?;
        let bound = listener.local_addr()?;
        if let Some(path) = &args.server.addr_file {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bound.to_string())
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot write the address file {}", path.display()))?;
        }
        let base = format!("http://{}", local_addr(bound));
        let store_name = store.backend();
        let write_token = config.write_token.clone();
        let read_token = config.read_token.clone();

        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(procwatch_server::run(listener, config, store, async {
            let _ = server_stopped.await;
        }));

        let agent = match collector {
            None => None,
            Some(collector) => {
                let cfg = agent_config(&args, &base, host.clone(), write_token);
                tracing::info!(
                    message = "Local agent starting.",
                    host = %cfg.host,
                    interval_ms = cfg.interval.as_millis() as u64,
                    spool = %cfg.spool.dir.display()
                );
                let sweep = super::agent::sweep::sweep_fn(collector, args.metrics);
                Some(procwatch_agent::Agent::start(cfg, sweep).context("cannot start the agent")?)
            }
        };

        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let fanout = tokio::spawn(dispatch(rx, notifiers));
        let mut follower = tokio::spawn(follow(FollowOptions::new(base.clone(), read_token), tx));

        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "procwatch is up: dashboard at {base}/");
            let _ = out.flush();
        }
        // The data directory only where there is one (not with --store memory or influxdb).
        let data_dir = (store_name == "sqlite").then(|| args.server.data_dir.display().to_string());
        tracing::info!(
            message = "Press Ctrl-C to stop.",
            store = store_name,
            data_dir = data_dir.as_deref().unwrap_or("none"),
            host = %host,
            listen = %bound
        );

        let mut follower_done = false;
        let mut early: Option<anyhow::Error> = None;
        let signal = shutdown.wait();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                r = &mut server => {
                    early = Some(match r {
                        Ok(Ok(())) => anyhow::anyhow!("the server stopped on its own"),
                        Ok(Err(e)) => anyhow::Error::from(e).context("server failed"),
                        Err(e) => anyhow::Error::from(e).context("server task failed"),
                    });
                    break;
                }
                r = &mut follower, if !follower_done => {
                    follower_done = true;
                    match r {
                        Ok(Err(error)) => tracing::warn!(message = "The alarm console stopped.", %error),
                        Err(error) => tracing::warn!(message = "The alarm console stopped.", %error),
                        Ok(Ok(())) => {}
                    }
                }
            }
        }

        tracing::info!(message = "Stopping: agent first, then the alarm console, then the server.");
        if let Some(agent) = agent {
            let stats = agent.stats();
            agent.stop().await;
            use std::sync::atomic::Ordering::Relaxed;
            tracing::info!(
                message = "Agent stopped.",
                sweeps = stats.sweeps.load(Relaxed),
                sent_records = stats.sent_records.load(Relaxed),
                sent_samples = stats.sent_samples.load(Relaxed)
            );
        }
        follower.abort();
        let _ = follower.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), fanout).await;
        if let Some(e) = early {
            return Err(e);
        }
        let _ = stop_server.send(());
        server.await.context("server task failed")?.context("server failed")?;
        if args.spool_dir.is_none() && !matches!(args.server.store, super::server::StoreKind::Sqlite) {
            // The per-run spool in the temp dir (see default_spool) goes with the run.
            let _ = std::fs::remove_dir_all(default_spool(&args));
        }
        tracing::info!(message = "procwatch stopped.");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_become_loopback() {
        let a: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert_eq!(local_addr(a).to_string(), "127.0.0.1:8000");
        let a: SocketAddr = "[::]:8000".parse().unwrap();
        assert_eq!(local_addr(a).to_string(), "[::1]:8000");
        let a: SocketAddr = "10.1.2.3:9".parse().unwrap();
        assert_eq!(local_addr(a), a);
    }
}
