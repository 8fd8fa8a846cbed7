//! `procwatch alarm`: the alarm service and `procwatch alarm backtest`, which replays traces
//! through the alarm crate's forecasters and scores them by docs/contract.md §4.
//!
//! `procwatch alarm [--server URL] [--token T | --token-file F] [--state-file F] [--color auto|always|never]` follows the server's
//! alarm stream (`/api/v1/alarms/stream`, reconnecting with backoff forever; a 401/403/404 ends
//! it with an error), prints one line per transition on stdout
//! (`RED   web-1 java cpu 93.1% > 80%`; coloured by level when stdout is a terminal and
//! `NO_COLOR` is unset, plain otherwise), and forwards every event to the `[[notifiers]]` of its `--config` file
//! (webhook, alertmanager: see `procwatch_notify`). Logs go to stderr. SIGINT/SIGTERM stop it
//! (notifications in flight get 5 s to finish).
//!
//! `procwatch alarm bench` times the server's evaluation pass on a synthetic fleet (see
//! BENCHMARKS.md, "Alarm evaluation").
//!
//! The server reads its alarm rules (`[alarm_defaults]`, `[[rules]]`, top level of the same
//! kind of file) through [`rules_from_config`].

mod cv;

use anyhow::{bail, Context, Result};
use procwatch_alarm::backtest::{
    forecast_flags, oracle_flags, parse_trace, prepare, score, trace_files_in, Prepared, Protocol,
    Scale, Score,
};
use procwatch_alarm::forecast::{Forecaster, SENSITIVITY_RANGE};
use procwatch_alarm::rules::{parse_duration_ms, Method};
use procwatch_alarm::{RuleSet, RuleSpec};
use procwatch_model::Metric;
use procwatch_notify::follow::{dispatch, follow, FollowOptions};
use procwatch_notify::{console::Console, Notifier, NotifierSpec};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct AlarmArgs {
    #[arg(
        long,
        env = "PROCWATCH_SERVER",
        value_name = "URL",
        default_value = super::DEFAULT_SERVER,
        help = super::SERVER_HELP
    )]
    server: String,

    #[command(flatten)]
    token: super::token::ReadToken,

    /// Where to keep the last event id seen and what was delivered (JSON), so a restart
    /// resumes the stream where it left off and notifies each transition once: alarms
    /// announced before are printed as "still active since …", not posted again.
    #[arg(long, env = "PROCWATCH_STATE_FILE", value_name = "FILE")]
    state_file: Option<PathBuf>,

    /// Colour the lines by level: auto (when stdout is a terminal and NO_COLOR is unset), always,
    /// never.
    #[arg(long, env = "PROCWATCH_COLOR", default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,

    #[command(subcommand)]
    command: Option<AlarmCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum AlarmCommand {
    /// Replay traces through a forecaster and print docs/contract.md §4's scores, per trace and
    /// pooled per group (cpu_native, cpu_scaled, mem_scaled).
    Backtest(Box<BacktestArgs>),
    /// Time the server's alarm evaluation over a synthetic fleet in a temporary SQLite store:
    /// the first pass (reads W + H back) and steady passes (new samples only), beside the
    /// store's window read alone.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Hosts in the synthetic fleet.
    #[arg(long, env = "PROCWATCH_HOSTS", default_value_t = 50)]
    hosts: usize,

    /// Process names per host.
    #[arg(long, env = "PROCWATCH_PROCESSES", default_value_t = 200)]
    processes: usize,

    /// Steady passes to time (one new sweep of every series before each).
    #[arg(long, env = "PROCWATCH_PASSES", default_value_t = 15)]
    passes: usize,
}

#[derive(Debug, clap::Args)]
struct BacktestArgs {
    /// Trace CSV files (`timestamp,value`), or directories of them.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    trace: Vec<PathBuf>,

    /// Threshold T, percent.
    #[arg(long, env = "PROCWATCH_THRESHOLD", default_value_t = 80.0)]
    threshold: f64,

    /// Forecast horizon H.
    #[arg(long, env = "PROCWATCH_HORIZON", default_value = "10m")]
    horizon: String,

    /// AMBER needs the forecast above T on this many samples in a row (1 = none, as in the
    /// contract's cross-checks).
    #[arg(long, env = "PROCWATCH_DEBOUNCE", default_value_t = 1)]
    debounce: u32,

    /// Scaling: auto (the contract's rule), none, or a factor.
    #[arg(long, env = "PROCWATCH_SCALE", default_value = "auto")]
    scale: String,

    /// Forecast method: linear, holt, persistence, oracle (reads the future: the scorer's
    /// self-check); procwatch's default forecaster when absent.
    #[arg(long, env = "PROCWATCH_METHOD")]
    method: Option<String>,

    /// procwatch's sensitivity (noise widths of margin; higher = more AMBER); the metric's
    /// default when absent.
    #[arg(long, env = "PROCWATCH_SENSITIVITY", allow_hyphen_values = true)]
    sensitivity: Option<f64>,

    /// Window W of `linear`.
    #[arg(long, env = "PROCWATCH_WINDOW", default_value = "10m")]
    window: String,

    /// Holt's level smoothing α.
    #[arg(long, env = "PROCWATCH_ALPHA", default_value_t = 0.8)]
    alpha: f64,

    /// Holt's trend smoothing β.
    #[arg(long, env = "PROCWATCH_BETA", default_value_t = 0.4)]
    beta: f64,

    /// Output format.
    #[arg(long, env = "PROCWATCH_FORMAT", default_value = "table", value_parser = ["table", "json"])]
    format: String,

    /// Leave-one-trace-out cross-validation of procwatch's `sensitivity` per family (mem, cpu,
    /// cpu without the asg trace): prints held-out figures only, the default the procedure
    /// picks, and the operating curve (procwatch by sensitivity, predict_linear at W = 5, 10,
    /// 20, 30 min). `--method` and `--window` are ignored.
    #[arg(long)]
    cv: bool,

    /// With `--cv`: how each fold picks the knob on its training traces: `recall` (the lowest
    /// knob reaching the family's goal recall) or `budget` (the best recall within the
    /// family's false-alarm budget and predict_linear W=10m's AMBER %).
    #[arg(long, default_value = "recall", value_parser = ["recall", "budget"], requires = "cv")]
    cv_criterion: String,

    /// With `--cv`: also write the operating curves as an SVG picture to this file.
    #[arg(long, value_name = "FILE", requires = "cv")]
    curve_svg: Option<PathBuf>,
}

pub fn run(args: AlarmArgs) -> Result<()> {
    match args.command {
        Some(AlarmCommand::Backtest(b)) => backtest(*b),
        Some(AlarmCommand::Bench(b)) => bench(b),
        None => service(args),
    }
}

/// The alarm tables of the config file (other keys are someone else's).
#[derive(Debug, Default, Deserialize)]
struct AlarmTables {
    #[serde(default)]
    alarm_defaults: RuleSpec,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    notifiers: Vec<NotifierSpec>,
}

/// Reads the alarm tables of the `--config` file (the config layer exports its path as
/// `PROCWATCH_CONFIG`); no file, no tables.
fn config_tables() -> Result<AlarmTables> {
    let Some(path) = std::env::var_os("PROCWATCH_CONFIG").map(PathBuf::from) else {
        return Ok(AlarmTables::default());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// The server's alarm rules: `[alarm_defaults]` and `[[rules]]` of the config file over the
/// built-in defaults.
pub fn rules_from_config() -> Result<RuleSet> {
    let t = config_tables()?;
    RuleSet::from_specs(&t.alarm_defaults, &t.rules).context("alarm rules of the config file")
}

/// `procwatch alarm --server URL`: follow, print, notify.
fn service(args: AlarmArgs) -> Result<()> {
    let server = super::client_server(&args.server)?;
    let colour = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut notifiers: Vec<Arc<dyn Notifier>> =
        vec![Arc::new(Console::new(std::io::stdout(), colour))];
    for spec in config_tables()?.notifiers {
        notifiers.push(spec.build()?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("procwatch-alarm")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = super::signal::Shutdown::install()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let fanout = tokio::spawn(dispatch(rx, notifiers));
        let mut opts = FollowOptions::new(server, args.token.resolve()?);
        opts.state_file = args.state_file.clone();
        let followed = tokio::select! {
            r = follow(opts, tx) => r.map_err(anyhow::Error::from),
            () = shutdown.wait() => Ok(()),
        };
        // The sender is gone: the notifiers finish what they have, within bounds.
        let _ = tokio::time::timeout(Duration::from_secs(5), fanout).await;
        followed
    })
}

/// The forecast method chosen on the command line.
enum Chosen {
    Oracle,
    Model(Method),
}

fn trace_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(trace_files_in(p).context("cannot list the trace directory")?);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        bail!("no trace files given");
    }
    Ok(files)
}

fn backtest(args: BacktestArgs) -> Result<()> {
    let horizon_ms = parse_duration_ms(&args.horizon)?;
    let window_ms = parse_duration_ms(&args.window)?;
    let scale: Scale = args.scale.parse().map_err(anyhow::Error::msg)?;
    let (chosen, method_name) = match args.method.as_deref() {
        None | Some("procwatch") | Some("default") => {
            let sensitivity = args.sensitivity;
            if let Some(z) = sensitivity.filter(|z| !SENSITIVITY_RANGE.contains(z)) {
                bail!("--sensitivity {z} is out of range {SENSITIVITY_RANGE:?}");
            }
            let name = match sensitivity {
                Some(z) => format!("procwatch sensitivity={z}"),
                None => "procwatch".to_owned(),
            };
            (Chosen::Model(Method::Procwatch { sensitivity, shape: None }), name)
        }
        Some("oracle") => (Chosen::Oracle, "oracle".to_owned()),
        Some(m) => {
            let method = Method::parse(m, args.alpha, args.beta)?;
            let name = match method {
                Method::Linear => format!("linear window={}", args.window),
                Method::Holt { alpha, beta } => format!("holt alpha={alpha} beta={beta}"),
                _ => m.to_owned(),
            };
            (Chosen::Model(method), name)
        }
    };
    if horizon_ms <= 0 || window_ms <= 0 {
        bail!("--horizon and --window must be positive");
    }
    let proto = Protocol { threshold: args.threshold, horizon_ms, debounce: args.debounce.max(1) };
    let mut prepared = Vec::new();
    for file in trace_files(&args.trace)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let name = file
            .file_name()
            .map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
        let trace =
            parse_trace(&name, &text).with_context(|| format!("trace {}", file.display()))?;
        prepared.push(prepare(&trace, scale, args.threshold));
    }
    if args.cv {
        let out = cv::run(&args, &prepared, &proto)?;
        return write_stdout(&out);
    }
    let mut rows: Vec<(Prepared, Score)> = Vec::new();
    for p in prepared {
        let flags = match &chosen {
            Chosen::Oracle => oracle_flags(&p, &proto),
            Chosen::Model(m) => {
                // An unset sensitivity and shape: the defaults of the trace's metric, as the
                // engine does.
                let metric = if p.group.starts_with("mem") { Metric::Mem } else { Metric::Cpu };
                let mut f: Box<dyn Forecaster> =
                    m.for_metric(metric).forecaster(window_ms, horizon_ms, p.step_ms);
                forecast_flags(&p, &proto, &mut *f)
            }
        };
        let s = score(&p, &proto, &flags);
        rows.push((p, s));
    }
    let mut groups: BTreeMap<String, Score> = BTreeMap::new();
    for (p, s) in &rows {
        groups.entry(p.group.clone()).or_default().add(s);
    }
    let mut out;
    if args.format == "json" {
        let json = serde_json::json!({
            "method": method_name,
            "threshold": args.threshold,
            "horizon_seconds": horizon_ms / 1000,
            "debounce": proto.debounce,
            "traces": rows.iter().map(|(p, s)| figures(&p.name, Some(p), s)).collect::<Vec<_>>(),
            "groups": groups.iter().map(|(g, s)| figures(g, None, s)).collect::<Vec<_>>(),
        });
        out = serde_json::to_string_pretty(&json)? + "\n";
    } else {
        out = format!(
            "method {method_name}, T={} H={} debounce {}\n",
            args.threshold, args.horizon, proto.debounce
        );
        out += &format!(
            "{:52} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>7} {:>12}\n",
            "trace / group",
            "events",
            "caught",
            "recall",
            "lead",
            "prec",
            "false",
            "false/d",
            "AMBER%",
            "falseAmin/d"
        );
        for (p, s) in &rows {
            out += &(table_row(&format!("{} ({})", p.name, p.group), s) + "\n");
        }
        for (g, s) in &groups {
            out += &(table_row(&format!("= {g} ({} traces)", s.traces), s) + "\n");
        }
    }
    write_stdout(&out)
}

fn write_stdout(out: &str) -> Result<()> {
    // A closed pipe (`| head`) is not an error.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn table_row(name: &str, s: &Score) -> String {
    format!(
        "{name:52} {:>6} {:>6} {:>6.2} {:>5.1}m {:>6.2} {:>6} {:>8.2} {:>7.2} {:>12.1}",
        s.events,
        s.caught,
        s.recall(),
        s.lead_minutes(),
        s.precision(),
        s.false_episodes,
        s.false_per_day(),
        s.amber_pct(),
        s.false_amber_minutes_per_day()
    )
}

fn figures(name: &str, trace: Option<&Prepared>, s: &Score) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": name,
        "traces": s.traces,
        "events": s.events,
        "caught": s.caught,
        "recall": s.recall(),
        "lead_minutes": s.lead_minutes(),
        "true_episodes": s.true_episodes,
        "false_episodes": s.false_episodes,
        "unscored_episodes": s.unscored_episodes,
        "precision": s.precision(),
        "days": s.days,
        "false_per_day": s.false_per_day(),
        "amber_samples": s.amber_samples,
        "amber_pct": s.amber_pct(),
        "false_amber_minutes_per_day": s.false_amber_minutes_per_day(),
    });
    if let Some(p) = trace {
        v["group"] = p.group.clone().into();
        v["scaled"] = p.scaled.into();
    }
    v
}

/// A synthetic sweep of one host: `processes` series, cpu cycling so that some are above 80.
fn bench_batch(host: usize, processes: usize, seq: u64, stamps: &[i64]) -> procwatch_model::Batch {
    let mut samples = Vec::with_capacity(stamps.len() * processes);
    for (k, &ts) in stamps.iter().enumerate() {
        for p in 0..processes {
            let phase = (host * 31 + p * 17 + k) % 100;
            let cpu = if p % 50 == 0 { 85.0 + (phase % 10) as f64 } else { (phase % 60) as f64 };
            samples.push(procwatch_model::Sample {
                ts,
                process: format!("proc-{p:04}"),
                cpu,
                cores: cpu / 50.0,
                mem: 1.0 + (p % 7) as f64,
                rss: 1 << 20,
                count: 1,
                extras: None,
            });
        }
    }
    procwatch_model::Batch {
        host: format!("bench-{host:04}"),
        agent: "bench".into(),
        seq,
        interval_ms: 10_000,
        host_totals: vec![],
        samples,
        dropped_samples: 0,
        report: None,
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn bench(args: BenchArgs) -> Result<()> {
    use procwatch_store::{Storage, UsageQuery};
    if args.hosts == 0 || args.processes == 0 || args.passes == 0 {
        bail!("--hosts, --processes and --passes must be more than 0");
    }
    let dir = std::env::temp_dir().join(format!("procwatch-alarm-bench-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(async {
        let opts = procwatch_store_sqlite::SqliteOptions::default();
        let store: Arc<dyn Storage> = Arc::new(
            procwatch_store_sqlite::SqliteStore::open(&dir, opts)
                .with_context(|| format!("cannot open a store in {}", dir.display()))?,
        );
        let interval = 10_000i64;
        let now0 = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64)
            / interval
            * interval;
        // 21 minutes of history: more than the default W + H (20 min) the first pass reads.
        let stamps: Vec<i64> = (0..126).rev().map(|k| now0 - k * interval).collect();
        for h in 0..args.hosts {
            store.write_batch(&bench_batch(h, args.processes, 1, &stamps)).await?;
        }
        let config = procwatch_server::ServerConfig {
            interval: Duration::from_millis(interval as u64),
            ..procwatch_server::ServerConfig::default()
        };
        let st = procwatch_server::AppState::new(store.clone(), config);
        let t = std::time::Instant::now();
        let first_events = st.alarms.evaluate(&st, now0).await?.len();
        let first = t.elapsed();
        let (mut evals, mut reads, mut events) = (Vec::new(), Vec::new(), 0);
        for pass in 1..=args.passes as i64 {
            let now = now0 + pass * interval;
            for h in 0..args.hosts {
                store.write_batch(&bench_batch(h, args.processes, 1 + pass as u64, &[now])).await?;
            }
            // The peer: the store read a steady pass does (the last 30 s), alone.
            let t = std::time::Instant::now();
            let q = UsageQuery { from: now - 30_000, to: now + 300_001, per_host: true, ..Default::default() };
            let read = store.window(&q).await?;
            reads.push(t.elapsed());
            std::hint::black_box(read);
            let t = std::time::Instant::now();
            events += st.alarms.evaluate(&st, now).await?.len();
            evals.push(t.elapsed());
        }
        let series = args.hosts * args.processes;
        let (eval, read) = (median(&mut evals), median(&mut reads));
        println!(
            "alarm evaluation, {series} series ({} hosts x {} processes), SQLite store, {} steady passes",
            args.hosts, args.processes, args.passes
        );
        println!("first pass (reads 20 min back, {first_events} events): {:>9.1} ms", first.as_secs_f64() * 1e3);
        println!("steady pass, median ({events} events in all):       {:>9.1} ms", eval.as_secs_f64() * 1e3);
        println!("  store window read alone (last 30 s), median:  {:>9.1} ms", read.as_secs_f64() * 1e3);
        println!(
            "  engine and the rest (difference):             {:>9.1} ms = {:.2} us per series",
            eval.saturating_sub(read).as_secs_f64() * 1e3,
            eval.saturating_sub(read).as_secs_f64() * 1e6 / series as f64
        );
        store.close().await?;
        anyhow::Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
