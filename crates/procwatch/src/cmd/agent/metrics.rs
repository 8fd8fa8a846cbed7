//! `procwatch agent --server URL --metrics-listen ADDR`: the agent's own metrics at
//! `GET http://ADDR/metrics`, Prometheus text format (version 0.0.4) encoded by
//! `prometheus-client`. Off unless the flag is given; not with `--once`. Any other path is 404.
//!
//! Read on every scrape:
//! - `procwatch_agent_cpu_seconds_total` — user + system CPU time of the agent process
//!   (`/proc/self/stat`; Linux only, absent elsewhere);
//! - `procwatch_agent_resident_memory_bytes` — its resident set (Linux only);
//! - `procwatch_agent_spool_bytes` — bytes of the spool directory on disk: the spool depth
//!   (sweeps not yet acknowledged by the server, plus the current segment's slack);
//! - counters since the agent started: `procwatch_agent_sweeps_total`,
//!   `procwatch_agent_sweep_errors_total`, `procwatch_agent_missed_ticks_total`,
//!   `procwatch_agent_spooled_samples_total`, `procwatch_agent_sent_samples_total`,
//!   `procwatch_agent_dropped_samples_total` (spool cap or age hit), `procwatch_agent_retries_total`,
//!   `procwatch_agent_quarantined_records_total` (batches the server refused for good);
//! - the standard `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_open_fds`, `process_max_fds`, `process_start_time_seconds`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use procwatch_agent::AgentStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// What one scrape reports; built by [`AgentCollector`].
#[derive(Debug)]
struct AgentCollector {
    stats: Arc<AgentStats>,
    spool_dir: PathBuf,
}

/// CPU seconds and resident bytes of this process, from `/proc/self/stat`.
fn self_usage() -> Option<(f64, u64)> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let stat = procwatch_collector::parse::parse_pid_stat(&text)?;
    let tck = procwatch_collector::sys::clk_tck().max(1) as f64;
    let page = procwatch_collector::sys::page_size();
    Some((stat.ticks() as f64 / tck, stat.rss_pages.saturating_mul(page)))
}

/// Bytes of the regular files under `dir` (not following links).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: &AtomicU64) -> std::fmt::Result {
    let c = ConstCounter::new(v.load(Ordering::Relaxed));
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        if let Some((cpu, rss)) = self_usage() {
            let c = ConstCounter::new(cpu);
            c.encode(enc.encode_descriptor(
                "procwatch_agent_cpu_seconds",
                "User and system CPU time of the agent process",
                None,
                c.metric_type(),
            )?)?;
            let g = ConstGauge::new(rss as i64);
            g.encode(enc.encode_descriptor(
                "procwatch_agent_resident_memory_bytes",
                "Resident set of the agent process",
                None,
                g.metric_type(),
            )?)?;
        }
        let g = ConstGauge::new(dir_bytes(&self.spool_dir) as i64);
        g.encode(enc.encode_descriptor(
            "procwatch_agent_spool_bytes",
            "Bytes of the spool on disk (sweeps not yet acknowledged by the server)",
            None,
            g.metric_type(),
        )?)?;
        let s = &self.stats;
        counter(&mut enc, "procwatch_agent_sweeps", "Sweeps taken", &s.sweeps)?;
        counter(&mut enc, "procwatch_agent_sweep_errors", "Sweeps that failed", &s.sweep_errors)?;
        counter(
            &mut enc,
            "procwatch_agent_missed_ticks",
            "Ticks skipped because a sweep overran an interval",
            &s.missed_ticks,
        )?;
        counter(
            &mut enc,
            "procwatch_agent_spooled_samples",
            "Samples written to the spool",
            &s.spooled_samples,
        )?;
        counter(
            &mut enc,
            "procwatch_agent_sent_samples",
            "Samples the server acknowledged",
            &s.sent_samples,
        )?;
        counter(
            &mut enc,
            "procwatch_agent_dropped_samples",
            "Samples dropped by the spool's size or age cap",
            &s.dropped_samples,
        )?;
        counter(&mut enc, "procwatch_agent_retries", "Delivery attempts retried", &s.retries)?;
        counter(
            &mut enc,
            "procwatch_agent_quarantined_records",
            "Batches the server refused for good (kept aside, not retried)",
            &s.quarantined_records,
        )?;
        counter(
            &mut enc,
            "procwatch_agent_quarantine_evicted_files",
            "Quarantined batches deleted (or not written) to keep the quarantine under its cap",
            &s.quarantine_evicted_files,
        )?;
        counter(
            &mut enc,
            "procwatch_agent_misconfigured_answers",
            "Answers that were not the server's acknowledgement (3xx, 404, 405, a 2xx of another shape); the batch stayed spooled",
            &s.misconfigured_answers,
        )?;
        Ok(())
    }
}

/// Renders the agent's metrics.
fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(2048);
    match prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        Ok(()) => {
            // The standard process_* self-metrics, as every Prometheus client exports them.
            out.push_str(&procwatch_collector::selfmetrics::text());
            out
        }
        Err(e) => format!("# encoding failed: {e}\n"),
    }
}

/// Binds `addr` and serves `/metrics` until the returned task is aborted.
pub async fn serve(
    addr: &str,
    stats: Arc<AgentStats>,
    spool_dir: PathBuf,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentCollector { stats, spool_dir }));
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    )],
                    render(&registry),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-listen {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(message = "Agent metrics served.", addr = %local);
    if !local.ip().is_loopback() {
        // The page has no authentication: it tells anyone who can reach it the spool's state.
        tracing::warn!(
            message = "Agent metrics listen on a non-loopback address, without authentication or TLS; bind 127.0.0.1 unless a firewall restricts who reaches it.",
            addr = %local
        );
    }
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(message = "Agent metrics server stopped.", %error);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_counters_and_the_spool_size() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 23]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 123);
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);

        let stats = Arc::new(AgentStats::default());
        stats.sweeps.store(7, Ordering::Relaxed);
        stats.dropped_samples.store(3, Ordering::Relaxed);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(AgentCollector {
            stats,
            spool_dir: dir.path().to_owned(),
        }));
        let text = render(&registry);
        assert!(text.contains("procwatch_agent_sweeps_total 7\n"), "{text}");
        assert!(text.contains("procwatch_agent_dropped_samples_total 3\n"), "{text}");
        assert!(text.contains("procwatch_agent_spool_bytes 123\n"), "{text}");
        assert!(text.contains("# TYPE procwatch_agent_sent_samples_total counter"), "{text}");
        if cfg!(target_os = "linux") {
            assert!(text.contains("procwatch_agent_cpu_seconds_total "), "{text}");
            let rss_line = text
                .lines()
                .find(|l| l.starts_with("procwatch_agent_resident_memory_bytes "))
                .expect("rss line");
            let rss: u64 = rss_line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(rss > 1 << 20, "{rss_line}");
        }
    }
}
