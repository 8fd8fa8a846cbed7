//! `procwatch agent --server URL`: the collector plugged into `procwatch_agent::run` (spool
//! first, then ship; nothing taken is lost).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use procwatch_agent::{AgentConfig, BackoffConfig};
use procwatch_collector::Collector;

use super::AgentArgs;

/// Delivery flags (used with `--server`).
#[derive(Debug, clap::Args)]
pub struct DeliveryArgs {
    /// Cap on the spool's size on disk; past it the oldest sweeps are dropped, counted and
    /// reported to the server (e.g. 256MiB, 1GiB, 500000).
    #[arg(long, env = "PROCWATCH_SPOOL_MAX_BYTES", default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub spool_max_bytes: u64,

    /// Spooled sweeps older than this are dropped (counted and reported).
    #[arg(long, env = "PROCWATCH_SPOOL_MAX_AGE", default_value = "48h", value_parser = procwatch_model::duration::parse, value_name = "DURATION")]
    pub spool_max_age: Duration,

    /// Cap on `<spool-dir>/quarantine/` (batches the server refused for good, kept for a
    /// person to inspect); past it the oldest are deleted first, counted in
    /// `procwatch_agent_quarantine_evicted_files_total`.
    #[arg(long, env = "PROCWATCH_QUARANTINE_MAX_BYTES", default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub quarantine_max_bytes: u64,

    /// fdatasync the spool after every sweep (a sweep survives a power loss once spooled).
    #[arg(long, env = "PROCWATCH_SPOOL_FSYNC", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub spool_fsync: bool,

    /// Largest wait between two delivery attempts (exponential backoff from 500ms, full
    /// jitter).
    #[arg(long, env = "PROCWATCH_RETRY_MAX", default_value = "30s", value_parser = procwatch_model::duration::parse, value_name = "DURATION")]
    pub retry_max: Duration,

    /// Timeout of one delivery request.
    #[arg(long, env = "PROCWATCH_REQUEST_TIMEOUT", default_value = "30s", value_parser = procwatch_model::duration::parse, value_name = "DURATION")]
    pub request_timeout: Duration,

    /// Extra CA certificate(s) (PEM) trusted for an https:// --server with a private CA.
    #[arg(long, env = "PROCWATCH_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Serve the agent's own metrics (CPU, RSS, spool depth, dropped samples) in the
    /// Prometheus text format at http://ADDR/metrics (see `metrics`). Not with --once.
    #[arg(long, env = "PROCWATCH_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl DeliveryArgs {
    /// Applies the delivery settings (request timeout, backoff, spool, quarantine) to `cfg`:
    /// one place for `procwatch agent --server` and the local agent of `procwatch up`.
    pub fn apply(&self, cfg: &mut AgentConfig) {
        cfg.shipper.timeout = self.request_timeout;
        cfg.backoff = BackoffConfig { max: self.retry_max, ..BackoffConfig::default() };
        cfg.spool.max_bytes = self.spool_max_bytes;
        cfg.spool.max_age = self.spool_max_age;
        cfg.spool.fsync = self.spool_fsync;
        cfg.quarantine_max_bytes = self.quarantine_max_bytes;
        cfg.spool.segment_bytes = (self.spool_max_bytes / 32).clamp(4 << 10, 8 << 20);
    }
}

/// The spool directory when `--spool-dir` is not given: under the data directory that
/// `procwatch up` uses too.
pub const DEFAULT_SPOOL_DIR: &str = "procwatch-data/spool";

/// Parses `256MiB`, `1GiB`, `64KiB`, `10MB`, `500000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}: expected e.g. 256MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {s:?}")),
    };
    Ok((n * mult as f64) as u64)
}

/// Reads `--ca-file` (PEM, at least one certificate).
pub fn read_ca_file(path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("no PEM certificate in the CA file {}", path.display());
    }
    Ok(Some(pem))
}

pub fn run(
    args: &AgentArgs,
    server: &str,
    host: String,
    collector: Box<dyn Collector + Send>,
) -> Result<()> {
    let d = &args.delivery;
    let spool_dir = args.spool_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
    let mut cfg = AgentConfig::new(host, server, &spool_dir);
    cfg.agent = super::AGENT_ID.to_string();
    cfg.interval = args.interval;
    cfg.shipper.token = args.token.resolve()?;
    cfg.shipper.ca_pem = read_ca_file(d.ca_file.as_deref())?;
    d.apply(&mut cfg);
    cfg.metrics = super::sweep::metric_names(args.metrics);
    cfg.extras_supported = args.collector == super::CollectorKindArg::Proc;
    if args.once {
        cfg.max_sweeps = Some(1);
        cfg.drain_timeout = d.request_timeout;
    }
    // One thread is plenty for one sender task (the sweep and the spool have their own
    // threads), and every extra runtime thread costs the agent RSS (its stack, a malloc arena).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Before "Agent starting.": a SIGINT or SIGTERM from here on stops the agent cleanly.
    let shutdown = {
        let _rt = rt.enter();
        super::super::signal::Shutdown::install()?
    };
    tracing::info!(
        message = "Agent starting.",
        server,
        host = %cfg.host,
        interval_ms = cfg.interval.as_millis() as u64,
        spool = %spool_dir.display()
    );
    let sweep = super::sweep::sweep_fn(collector, args.metrics);
    let stats = match d.metrics_listen.as_deref().filter(|_| !args.once) {
        None => rt
            .block_on(procwatch_agent::run(cfg, sweep, shutdown.wait()))
            .context("agent failed")?,
        Some(addr) => rt.block_on(async {
            let agent = procwatch_agent::Agent::start(cfg, sweep).context("agent failed")?;
            let stats = agent.stats();
            let server = super::metrics::serve(addr, stats.clone(), spool_dir.clone()).await;
            if server.is_ok() {
                shutdown.wait().await;
            }
            agent.stop().await;
            server?.abort();
            anyhow::Ok(stats)
        })?,
    };
    use std::sync::atomic::Ordering::Relaxed;
    tracing::info!(
        message = "Agent stopped.",
        sweeps = stats.sweeps.load(Relaxed),
        sent_samples = stats.sent_samples.load(Relaxed),
        dropped_samples = stats.dropped_samples.load(Relaxed),
        quarantined_records = stats.quarantined_records.load(Relaxed),
        retries = stats.retries.load(Relaxed),
        resent_after_restart = stats.resent_records.load(Relaxed),
        max_sweep_lateness_ms = stats.max_lateness_us.load(Relaxed) / 1000
    );
    if args.once && stats.sent_records.load(Relaxed) < stats.sweeps.load(Relaxed) {
        anyhow::bail!(
            "the sweep was not delivered to {server}; it is kept in {} for the next start",
            spool_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("500000"), Ok(500_000));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
