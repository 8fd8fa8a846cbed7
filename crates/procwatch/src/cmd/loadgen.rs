//! `procwatch loadgen`: a simulated fleet against a server, for load and crash tests.
//!
//! `--agents N` async agents (host `{--host-prefix}-{i}`), each sending one batch of
//! `--processes P` samples (processes `proc-0` .. `proc-{P-1}`, gzip like the real agent) every
//! `--interval`, starts staggered evenly over the first interval, for `--duration`. A batch
//! that fails is not retried (the figure is what the server took). At the end it prints one
//! JSON report on stdout: batches and samples sent and acknowledged, throughput, ingest latency
//! p50/p90/p99/max, errors by status (`connect`, `timeout` for transport errors), and with
//! `--server-pid PID` the server's RSS (VmRSS of /proc/PID/status) sampled every
//! `--rss-every` (start, end, max, and the series).
//!
//! `--ack-log FILE` appends one line per acknowledged (2xx) batch, written when the answer
//! arrives: `host seq ts samples`. The crash tests count every acknowledged sample in the store.
//! `--time-warp SPEED@ORIGIN_MS` (also `PROCWATCH_TIME_WARP`): time-compressed mode. Samples
//! are stamped, and agents paced, on the warped clock of `cmd::timewarp` (`--interval` and
//! `--duration` are then virtual time: `--interval 10s` at 20× sends every 0.5 s real); start
//! the server with the same value so both clocks agree. This fills and rolls over the server's
//! head window in minutes (the memory plateau test and the fleet memory figures use it).
//!
//! Loopback or your own servers only: it is a load generator.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use procwatch_model::precision::{round_cores, round_percent};
use procwatch_model::{Batch, HostTotal, Sample};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// Server base URL.
    #[arg(
        long,
        env = "PROCWATCH_SERVER",
        default_value = "http://127.0.0.1:8000",
        value_name = "URL"
    )]
    pub server: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Processes (samples) per batch.
    #[arg(long, default_value_t = 300)]
    pub processes: usize,
    /// Interval between two batches of one agent.
    #[arg(long, default_value = "10s", value_parser = procwatch_model::duration::parse)]
    pub interval: Duration,
    /// How long to send.
    #[arg(long, default_value = "60s", value_parser = procwatch_model::duration::parse)]
    pub duration: Duration,
    /// Write token (sent as a bearer token).
    #[arg(long, env = "PROCWATCH_WRITE_TOKEN", hide_env_values = true, value_name = "T")]
    pub token: Option<String>,
    /// PID of the server, to sample its RSS.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// How often the server's RSS is sampled.
    #[arg(long, default_value = "5s", value_parser = procwatch_model::duration::parse)]
    pub rss_every: Duration,
    /// Append `host seq ts samples` per acknowledged batch to FILE.
    #[arg(long, value_name = "FILE")]
    pub ack_log: Option<PathBuf>,
    /// Host name prefix of the simulated agents.
    #[arg(long, default_value = "loadgen")]
    pub host_prefix: String,
    /// Extra CA certificate(s) (PEM) to trust for an https:// server with a private CA.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Time-compressed mode: stamp and pace on a clock SPEED times faster than the wall clock
    /// from ORIGIN_MS on (give the server the same value); --interval and --duration are then
    /// virtual time.
    #[arg(long, env = "PROCWATCH_TIME_WARP", value_name = "SPEED@ORIGIN_MS")]
    pub time_warp: Option<super::timewarp::Warp>,
    /// Timeout of one request.
    #[arg(long, default_value = "30s", value_parser = procwatch_model::duration::parse)]
    pub timeout: Duration,
    /// Share (0 to 1) of each agent's processes that are busy: cpu 25–35 % and mem 17–23 %
    /// instead of 0–10 % and 0–2 %, always, so the alarm engine keeps their forecasters
    /// (a quiet series goes dormant). The first `busy × processes` of each host are busy.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub busy: f64,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}

#[derive(Default)]
struct Tally {
    sent: u64,
    acked: u64,
    samples_acked: u64,
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn make_batch(
    host: &str,
    seq: u64,
    ts: i64,
    processes: usize,
    interval_ms: u64,
    busy: usize,
    rng: &mut Rng,
) -> Batch {
    let samples = (0..processes)
        .map(|j| {
            // Random figures at the precision an agent sends (`procwatch_model::precision`),
            // rss in whole pages as /proc counts it.
            let (cpu, mem) = match j < busy {
                true => (25.0 + rng.next_f64() * 10.0, 17.0 + rng.next_f64() * 6.0),
                false => (rng.next_f64() * 10.0, rng.next_f64() * 2.0),
            };
            let cpu = round_percent(cpu);
            Sample {
                ts,
                process: format!("proc-{j}"),
                cpu,
                cores: round_cores(cpu / 50.0),
                mem: round_percent(mem),
                rss: (rng.next_f64() * 2.5e5) as u64 * 4096,
                count: 1 + (j % 4) as u32,
                extras: None,
            }
        })
        .collect();
    Batch {
        host: host.to_owned(),
        agent: "procwatch-loadgen".to_owned(),
        seq,
        interval_ms,
        host_totals: vec![HostTotal { ts, cpu: 40.0, mem: 50.0, unattributed_cpu: Some(1.0) }],
        samples,
        dropped_samples: 0,
        report: None,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn run(args: LoadgenArgs) -> Result<()> {
    anyhow::ensure!(args.agents > 0 && !args.interval.is_zero(), "--agents and --interval > 0");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(drive(args))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn drive(args: LoadgenArgs) -> Result<serde_json::Value> {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = super::agent::ship::read_ca_file(args.ca_file.as_deref())? {
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.timeout(args.timeout).pool_max_idle_per_host(args.agents).build()?;
    let endpoint = format!("{}/api/v1/samples", args.server.trim_end_matches('/'));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let ack = match &args.ack_log {
        Some(p) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))?,
        ))),
        None => None,
    };
    let warp = args.time_warp;
    let stamp = move || warp.map_or_else(now_ms, |w| w.at(now_ms()));
    let real = |d: Duration| warp.map_or(d, |w| w.real(d));
    let started = Instant::now();
    let end = started + real(args.duration);
    let rss = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let rss_task = args.server_pid.map(|pid| {
        let rss = rss.clone();
        let every = args.rss_every;
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    rss.lock().unwrap().push((started.elapsed().as_secs_f64(), kib));
                }
                if Instant::now() >= end {
                    break;
                }
                tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await;
            }
        })
    });
    let mut tasks = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let client = client.clone();
        let endpoint = endpoint.clone();
        let tally = tally.clone();
        let ack = ack.clone();
        let token = args.token.clone();
        let host = format!("{}-{i}", args.host_prefix);
        let (interval, processes) = (real(args.interval), args.processes);
        let busy = (args.busy * processes as f64).round() as usize;
        let interval_ms = args.interval.as_millis() as u64;
        let offset = interval.mul_f64(i as f64 / args.agents as f64);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0u64;
            loop {
                tick.tick().await;
                if Instant::now() >= end {
                    break;
                }
                seq += 1;
                let ts = stamp();
                let batch = make_batch(&host, seq, ts, processes, interval_ms, busy, &mut rng);
                let json = serde_json::to_vec(&batch).expect("batch serializes");
                let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
                let body = enc.write_all(&json).and_then(|()| enc.finish()).expect("gzip");
                let mut req = client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let t0 = Instant::now();
                let outcome = match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.bytes().await;
                        if status.is_success() {
                            Ok(())
                        } else {
                            Err(status.as_u16().to_string())
                        }
                    }
                    Err(e) if e.is_timeout() => Err("timeout".to_owned()),
                    Err(e) if e.is_connect() => Err("connect".to_owned()),
                    Err(_) => Err("transport".to_owned()),
                };
                let took = t0.elapsed().as_micros() as u64;
                if outcome.is_ok() {
                    if let Some(f) = &ack {
                        let mut f = f.lock().unwrap();
                        let _ = writeln!(f, "{host} {seq} {ts} {processes}");
                    }
                }
                let mut t = tally.lock().unwrap();
                t.sent += 1;
                t.latencies_us.push(took);
                match outcome {
                    Ok(()) => {
                        t.acked += 1;
                        t.samples_acked += processes as u64;
                    }
                    Err(kind) => *t.errors.entry(kind).or_default() += 1,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(t) = rss_task {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut t = tally.lock().unwrap();
    t.latencies_us.sort_unstable();
    let lat = &t.latencies_us;
    let errors: u64 = t.errors.values().sum();
    let rss = rss.lock().unwrap();
    Ok(json!({
        "agents": args.agents,
        "processes": args.processes,
        "busy": args.busy,
        "interval_s": args.interval.as_secs_f64(),
        "time_warp": warp.map(|w| w.speed),
        "duration_s": elapsed,
        "batches_sent": t.sent,
        "batches_acked": t.acked,
        "samples_acked": t.samples_acked,
        "samples_per_s": t.samples_acked as f64 / elapsed,
        "error_rate": if t.sent == 0 { 0.0 } else { errors as f64 / t.sent as f64 },
        "errors": t.errors,
        "latency_ms": {
            "p50": percentile(lat, 50.0), "p90": percentile(lat, 90.0),
            "p99": percentile(lat, 99.0), "max": lat.last().map_or(0.0, |v| *v as f64 / 1000.0),
        },
        "server_rss_kib": {
            "start": rss.first().map(|r| r.1), "end": rss.last().map(|r| r.1),
            "max": rss.iter().map(|r| r.1).max(),
            "series": rss.iter().map(|(s, k)| json!([(*s * 10.0).round() / 10.0, k])).collect::<Vec<_>>(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_share_keeps_its_processes_above_the_dormancy_ceilings_and_the_rest_quiet() {
        let mut rng = Rng(7);
        let busy = (parse_share("0.25").unwrap() * 300.0).round() as usize;
        for seq in 0..20 {
            let b = make_batch("h", seq, 1_000 * seq as i64, 300, 10_000, busy, &mut rng);
            for (j, s) in b.samples.iter().enumerate() {
                if j < 75 {
                    assert!((25.0..=35.0).contains(&s.cpu) && (17.0..=23.0).contains(&s.mem));
                } else {
                    assert!(s.cpu <= 10.0 && s.mem <= 2.0, "{s:?}");
                }
            }
        }
        for bad in ["-0.1", "1.5", "x", "NaN"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }
}
