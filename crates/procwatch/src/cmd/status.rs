//! `procwatch status [--server URL] [--token T | --token-file F]`: one screen of text from a running server,
//! for people who live in a terminal: the hosts (last seen, stale or not, host cpu and mem),
//! the top processes by mean cpu over the last `--window` (default 5m, top `--top` 10, one row
//! per host and process), and the alarms open now (RED, AMBER, STALE, silent hosts), in the
//! console notifier's words. Lines fit in 100 columns (long names are cut with `…`).
//!
//! It reads `GET /api/v1/hosts`, `GET /api/v1/usage` and `GET /api/v1/alarms?active=true`
//! (the read token, when the server has one, goes in `--token`, `--token-file`,
//! `PROCWATCH_READ_TOKEN` or `PROCWATCH_READ_TOKEN_FILE`). Exit code 1 when the server
//! cannot be reached or refuses.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use procwatch_model::{AlarmEvent, Metric};
use serde::Deserialize;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(
        long,
        env = "PROCWATCH_SERVER",
        default_value = super::DEFAULT_SERVER,
        value_name = "URL",
        help = super::SERVER_HELP
    )]
    pub server: String,

    #[command(flatten)]
    pub token: super::token::ReadToken,

    /// Window of the top processes (humantime: 5m, 1h).
    #[arg(long, env = "PROCWATCH_WINDOW", default_value = "5m", value_parser = procwatch_model::duration::parse)]
    pub window: Duration,

    /// How many processes to show.
    #[arg(long, env = "PROCWATCH_TOP", default_value_t = 10, value_name = "N")]
    pub top: usize,
}

/// `GET /api/v1/hosts`: the server's own response type.
pub type Hosts = procwatch_server::query::HostsResponse;

/// `GET /api/v1/usage`: the server's own response type (a figure not asked for reads as 0).
pub type Usage = procwatch_server::query::UsageResponse;

/// `GET /api/v1/alarms?active=true`.
#[derive(Debug, Deserialize)]
pub struct Alarms {
    pub alarms: Vec<AlarmEvent>,
}

pub fn run(args: StatusArgs) -> Result<()> {
    let base = super::client_server(&args.server)?;
    let token = args.token.resolve()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let text = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        let get = |path: String| fetch(&client, &base, token.as_deref(), path);
        let window = humantime::format_duration(args.window).to_string().replace(' ', "");
        let hosts: Hosts = serde_json::from_str(&get("/api/v1/hosts".into()).await?)
            .context("unexpected /api/v1/hosts answer")?;
        let usage_path = format!(
            "/api/v1/usage?window={window}&sort=cpu.mean&limit={}&metrics=cpu,mem,rss&stats=mean,max,last",
            args.top
        );
        let usage: Usage =
            serde_json::from_str(&get(usage_path).await?).context("unexpected /api/v1/usage answer")?;
        // Best effort: an older server without the rules route still gets its screen.
        let rules: Option<Rules> =
            get("/api/v1/rules".into()).await.ok().and_then(|b| serde_json::from_str(&b).ok());
        let alarms: Alarms =
            serde_json::from_str(&get("/api/v1/alarms?active=true&limit=0".into()).await?)
                .context("unexpected /api/v1/alarms answer")?;
        let mut text = render(&base, &window, &hosts, &usage, &alarms);
        if let Some(r) = &rules {
            text.push_str(&rules_legend(r));
        }
        // Best effort too: servers older than the forecasts route say nothing.
        let forecasts: Option<Forecasts> =
            get("/api/v1/forecasts".into()).await.ok().and_then(|b| serde_json::from_str(&b).ok());
        if let Some(f) = &forecasts {
            text.push_str(&forecasts_line(f));
        }
        anyhow::Ok(text)
    })?;
    print!("{text}");
    Ok(())
}

async fn fetch(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    path: String,
) -> Result<String> {
    let mut req = client.get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach {base}"))?;
    let status = resp.status();
    let body = resp.text().await.context("cannot read the answer")?;
    if !status.is_success() {
        bail!("{base}{path}: {status}: {}", body.trim());
    }
    Ok(body)
}

/// `GET /api/v1/forecasts`: the server's own response type.
pub type Forecasts = procwatch_server::alarms::ForecastsResponse;

/// "forecasts warming up: N series, first ready in M min" (empty when every forecast is ready).
pub fn forecasts_line(f: &Forecasts) -> String {
    match f.first_ready_in_ms {
        Some(ms) if f.warming_up > 0 => format!(
            "forecasts warming up: {} series, first ready in {} min (until then only RED fires for them)\n",
            f.warming_up,
            (ms + 59_999) / 60_000
        ),
        _ => String::new(),
    }
}

/// `GET /api/v1/rules`: the server's own response type.
pub type Rules = procwatch_server::alarms::RulesResponse;

/// What fires, in two or three lines: the cpu/mem threshold (a share of the host), the
/// built-in cores rule (a process saturating a core), and the forecast warm-up.
pub fn rules_legend(r: &Rules) -> String {
    let mut o = String::from("\nRULES\n");
    let d = &r.defaults;
    let _ = writeln!(
        o,
        "  RED above {}% cpu or mem (cpu% is a share of the whole host: one busy core of N is 100/N %)",
        d.threshold
    );
    if let Some(c) = r
        .rules
        .iter()
        .find(|c| c.metric == Some(Metric::Cores) && c.host == "*" && c.process == "*")
    {
        let _ = writeln!(
            o,
            "  RED above {} cores for any process (a process saturating a core, whatever the host's size)",
            c.threshold
        );
    }
    let _ = writeln!(
        o,
        "  AMBER (forecast) warms up: each series needs {} of samples first; until then only RED fires",
        // At least the window; a server older than `warmup_ms` sends none (read as 0).
        ago(d.warmup_ms.max(d.window_ms))
    );
    if r.rules.len() > 1 {
        let _ = writeln!(o, "  {} more rule(s): GET /api/v1/rules", r.rules.len() - 1);
    }
    o
}

/// `3s`, `4m`, `2h`, `5d`.
pub fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `268.0M`, `1.5G`, `512K`.
fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b.max(0.0);
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// `s` cut to `n` characters, with `…` when cut.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The screen: pure, so it is unit-tested.
pub fn render(base: &str, window: &str, hosts: &Hosts, usage: &Usage, alarms: &Alarms) -> String {
    let mut o = String::new();
    let stale = hosts.hosts.iter().filter(|h| h.stale).count();
    let _ = writeln!(
        o,
        "procwatch status of {}: {} host(s), {} stale, {} active alarm(s)",
        cut(base, 50),
        hosts.hosts.len(),
        stale,
        alarms.alarms.len()
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "HOSTS");
    if hosts.hosts.is_empty() {
        let _ = writeln!(o, "  (none yet: no agent has sent data)");
    } else {
        let _ = writeln!(
            o,
            "  {:<32} {:>9} {:<6} {:>6} {:>6} {:>7} {:>9}",
            "HOST", "LAST SEEN", "STATE", "CPU%", "MEM%", "GAPS", "DROPPED"
        );
        for h in &hosts.hosts {
            let (cpu, mem) = match &h.latest {
                Some(t) => (format!("{:.1}", t.cpu), format!("{:.1}", t.mem)),
                None => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                o,
                "  {:<32} {:>9} {:<6} {:>6} {:>6} {:>7} {:>9}",
                cut(&h.host, 32),
                format!("{} ago", ago(h.age_ms)),
                if h.stale { "STALE" } else { "ok" },
                cpu,
                mem,
                h.seq_gaps,
                h.dropped_samples
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "TOP PROCESSES by mean cpu over the last {window}");
    if usage.rows.is_empty() {
        let _ = writeln!(o, "  (no samples in the window)");
    } else {
        let _ = writeln!(
            o,
            "  {:<20} {:<28} {:>6} {:>6} {:>6} {:>6} {:>8} {:>5}",
            "HOST", "PROCESS", "CPU%", "MAX", "MEM%", "MAX", "RSS", "PROCS"
        );
        for r in usage.rows.iter().map(|v| &v.row) {
            let _ = writeln!(
                o,
                "  {:<20} {:<28} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>8} {:>5}",
                cut(r.host.as_deref().unwrap_or("*"), 20),
                cut(&r.process, 28),
                r.cpu.mean,
                r.cpu.max,
                r.mem.mean,
                r.mem.max,
                bytes(r.rss.last),
                r.count
            );
        }
    }
    if !usage.rows.is_empty() {
        let _ = writeln!(
            o,
            "  CPU% is a share of the whole host (mean and max over the window); PROCS: processes\n  running under that name now."
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "ACTIVE ALARMS");
    if alarms.alarms.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for ev in &alarms.alarms {
        let line = procwatch_notify::console::format_line(ev);
        let since = format!("  (since {} ago)", ago(hosts.now - ev.start));
        let room = 98usize.saturating_sub(since.chars().count());
        let _ = writeln!(o, "  {}{since}", cut(&line, room));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Hosts, Usage, Alarms) {
        let hosts: Hosts = serde_json::from_value(serde_json::json!({
            "now": 1_764_070_060_000_i64,
            "hosts": [
                {"host": "web-1", "last_seen": 1_764_070_057_000_i64, "age_ms": 3000, "stale": false,
                 "interval_ms": 10000, "last_seq": 4, "seq_gaps": 0, "dropped_samples": 0,
                 "latest": {"ts": 1_764_070_057_000_i64, "cpu": 41.5, "mem": 55.0}},
                {"host": "a-very-long-host-name-that-goes-on-and-on.example.com", "last_seen": 1, "age_ms": 7_200_000,
                 "stale": true, "interval_ms": 10000, "last_seq": 1, "seq_gaps": 2, "dropped_samples": 7,
                 "latest": null}
            ]
        }))
        .unwrap();
        let usage: Usage = serde_json::from_value(serde_json::json!({
            "from": 0, "to": 1,
            "rows": [{"host": "web-1", "process": "java",
                      "cpu": {"mean": 93.14, "max": 99.0, "last": 95.0},
                      "mem": {"mean": 3.2, "max": 3.3, "last": 3.2},
                      "rss": {"mean": 268435456.0, "max": 268435456.0, "last": 268435456.0},
                      "count": 7, "samples": 30, "last_ts": 1}]
        }))
        .unwrap();
        let alarms: Alarms = serde_json::from_value(serde_json::json!({
            "alarms": [{"id": "x", "host": "web-1", "process": "java", "metric": "cpu",
                        "level": "RED", "previous": "OK", "start": 1_764_069_760_000_i64,
                        "value": 93.14, "peak": 99.0, "threshold": 80.0}]
        }))
        .unwrap();
        (hosts, usage, alarms)
    }

    #[test]
    fn one_screen_within_100_columns() {
        let (h, u, a) = sample();
        let text = render("http://127.0.0.1:8000", "5m", &h, &u, &a);
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "too wide: {line:?}");
        }
        assert!(text.contains("2 host(s), 1 stale, 1 active alarm(s)"), "{text}");
        assert!(text.contains("web-1") && text.contains("3s ago") && text.contains("41.5"));
        assert!(text.contains("STALE") && text.contains("2h ago"), "{text}");
        assert!(text.contains("java") && text.contains("93.1") && text.contains("256.0M"));
        assert!(text.contains("RED   web-1 java cpu 93.1% > 80%  (since 5m ago)"), "{text}");
    }

    #[test]
    fn empty_server() {
        let h = Hosts { now: 0, hosts: vec![], next: None };
        let text = render(
            "http://x",
            "5m",
            &h,
            &Usage { from: 0, to: 1, rows: vec![], next: None },
            &Alarms { alarms: vec![] },
        );
        assert!(text.contains("no agent has sent data") && text.contains("(none)"), "{text}");
    }

    #[test]
    fn helpers() {
        assert_eq!(ago(59_999), "59s");
        assert_eq!(ago(61_000), "1m");
        assert_eq!(ago(90_000_000), "1d");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(bytes(512.0), "512B");
    }
}
