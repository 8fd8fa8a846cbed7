//! A real Prometheus (Debian package `prometheus`) scrapes a real `procwatch server` fed by a
//! real `procwatch agent`, with the read token in its scrape config, and its query API returns
//! the per-process series, including the alarm level of a process forced over the threshold;
//! every query of the Grafana dashboard in `deploy/grafana` runs on it.
//!
//! Without a `prometheus` binary the test prints "SKIPPED: ..." and passes, unless `CI` is
//! set (then it fails). Every child is killed by PID on drop.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{free_port, skip_or_fail, which, Proc};
use serde_json::Value;

const HOST: &str = "prom-e2e";
const READ_TOKEN: &str = "prom-read-token";

fn start_server(dir: &Path) -> (Proc, String) {
    common::start_server(dir, &["--interval", "1s", "--read-token", READ_TOKEN])
}

fn start_agent(dir: &Path, url: &str, metrics_addr: &str) -> Proc {
    let args = ["--interval", "1s", "--host", HOST, "--metrics-listen", metrics_addr];
    common::start_agent(dir, url, &args)
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    common::try_get_json(client, url, Some(READ_TOKEN)).await
}

/// Polls `f` every 250 ms until it returns `Some`, at most `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::wait_until_async_every(what, limit, Duration::from_millis(250), f).await
}

/// `promtool check metrics` (same Debian package as Prometheus) must print nothing and exit 0.
fn promtool_check(text: &str, what: &str) {
    use std::io::Write;
    let Some(promtool) = which("promtool") else {
        skip_or_fail("promtool is not installed (Debian package prometheus)");
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool on the {what}: {said}");
}

/// The guide's scrape config (the ```yaml block with `job_name: procwatch`), with this test's
/// addresses and token file, under a 1 s scrape interval: the documented config is the one
/// tested, `authorization.credentials_file` included.
fn prom_config(server: &str, agent: &str, token_file: &Path) -> String {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md");
    let guide = std::fs::read_to_string(guide).unwrap();
    let block = guide
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("job_name: procwatch"))
        .expect("the guide documents a Prometheus scrape config");
    assert!(block.contains("credentials_file: /etc/prometheus/procwatch-read.token"), "{block}");
    let block = block
        .replace("127.0.0.1:8000", server)
        .replace("127.0.0.1:9101", agent)
        .replace("/etc/prometheus/procwatch-read.token", &token_file.display().to_string());
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n{block}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_per_process_series() {
    let Some(prometheus) = which("prometheus") else {
        skip_or_fail("no prometheus binary (Debian package prometheus)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(dir.path());
    let agent_addr = format!("127.0.0.1:{}", free_port());
    let _agent = start_agent(dir.path(), &url, &agent_addr);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    // /metrics needs the read token, and has the agent's processes once it has shipped.
    let anonymous = client.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "/metrics is a read route");
    let text = wait_for("process series in /metrics", Duration::from_secs(30), || async {
        let r = client.get(format!("{url}/metrics")).bearer_auth(READ_TOKEN).send().await.ok()?;
        assert!(r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let t = r.text().await.ok()?;
        // Process and host series both: a family with no series yet is not in the text at all,
        // and the Grafana check below reads this snapshot.
        (t.contains(&format!("procwatch_process_cpu_percent{{host=\"{HOST}\""))
            && t.contains(&format!("procwatch_host_cpu_percent{{host=\"{HOST}\"")))
        .then_some(t)
    })
    .await;
    assert!(text.contains("# TYPE procwatch_ingested_samples_total counter"), "{text}");
    assert!(text.contains("# TYPE procwatch_http_request_duration_seconds histogram"));
    // Standard process_* self-metrics, and both endpoints promtool-clean (a gauge ending in
    // `_count`, e.g. the old procwatch_process_count, is what promtool complained about).
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
        assert!(text.contains(&format!("\n{name} ")), "{name} missing from the server:\n{text}");
    }
    // glibc's account of the heap, read at start and after each periodic trim: a real
    // reading, not the 0 of "none yet".
    let gauge = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| {
            panic!("{name} missing from the server:\n{text}");
        });
        line[name.len() + 1..].trim().parse().unwrap()
    };
    assert!(gauge("procwatch_heap_in_use_bytes") > 0.0, "no heap reading:\n{text}");
    assert!(gauge("procwatch_heap_free_bytes") >= 0.0);
    assert!(gauge("procwatch_alarm_dormant_series") >= 0.0);
    assert!(gauge("procwatch_store_maintenance_seconds") >= 0.0);
    // Nobody reads below the memory floor here: no turn taken, none waited for.
    assert_eq!(gauge("procwatch_store_long_reads_running"), 0.0);
    assert_eq!(gauge("procwatch_store_long_reads_waiting"), 0.0);
    promtool_check(&text, "server /metrics");
    let agent_text = wait_for("the agent's /metrics", Duration::from_secs(30), || async {
        let r = client.get(format!("http://{agent_addr}/metrics")).send().await.ok()?;
        r.text().await.ok().filter(|t| t.contains("procwatch_agent_sweeps_total"))
    })
    .await;
    assert!(agent_text.contains("\nprocess_start_time_seconds "), "{agent_text}");
    promtool_check(&agent_text, "agent /metrics");

    // A real Prometheus on a free loopback port, scraping every second.
    let server_addr = url.trim_start_matches("http://").to_owned();
    let token_file = dir.path().join("read.token");
    std::fs::write(&token_file, format!("{READ_TOKEN}\n")).unwrap();
    std::fs::write(
        dir.path().join("prom.yml"),
        prom_config(&server_addr, &agent_addr, &token_file),
    )
    .unwrap();
    let prom_port = free_port();
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let mut prom = Proc::spawn(
        "prometheus",
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.path().join("prom.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .current_dir(dir.path()),
    );

    let query = |q: String| {
        let client = client.clone();
        let prom_url = prom_url.clone();
        async move {
            let r = client
                .get(format!("{prom_url}/api/v1/query"))
                .query(&[("query", q.as_str())])
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let result = v["data"]["result"].as_array()?.clone();
            (v["status"] == "success" && !result.is_empty()).then_some(result)
        }
    };

    let series =
        wait_for("procwatch_process_cpu_percent in Prometheus", Duration::from_secs(60), || {
            prom.assert_running();
            query(format!("procwatch_process_cpu_percent{{host=\"{HOST}\"}}"))
        })
        .await;

    // The series Prometheus holds are the server's processes of that host.
    let usage = get_json(&client, &format!("{url}/api/v1/usage?host={HOST}&window=10m"))
        .await
        .expect("usage");
    let known: Vec<&str> =
        usage["rows"].as_array().unwrap().iter().map(|r| r["process"].as_str().unwrap()).collect();
    assert!(!series.is_empty());
    assert!(series.len() <= known.len().max(1), "more series than processes");
    for s in &series {
        let m = &s["metric"];
        assert_eq!(m["host"], HOST);
        assert_eq!(m["job"], "procwatch");
        let process = m["process"].as_str().expect("process label");
        assert!(known.contains(&process), "{process:?} is not a process of {HOST}: {known:?}");
        let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
        assert!((0.0..=100.0).contains(&v), "cpu {v} of {process}");
    }

    // A process forced over the threshold is exported whatever its rank, with level RED (3).
    let poster = {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            loop {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                let batch = serde_json::json!({"host": HOST, "agent": "prometheus-e2e", "seq": 0,
                    "interval_ms": 1000, "samples": [{"ts": ts, "process": "forced-red",
                    "cpu": 97.5, "cores": 1.95, "mem": 1.0, "rss": 1_000_000, "count": 1}]});
                let r = client.post(format!("{url}/api/v1/samples")).json(&batch).send().await;
                assert!(r.is_ok_and(|r| r.status().is_success()), "forced batch refused");
                // Behaviour, not synchronisation: a live host sends one batch an interval (1 s).
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let red = wait_for("alarm level 3 in Prometheus", Duration::from_secs(30), || {
        query(format!(
            "procwatch_process_alarm_level{{host=\"{HOST}\",process=\"forced-red\",metric=\"cpu\"}} == 3"
        ))
    })
    .await;
    assert_eq!(red.len(), 1);
    poster.abort();

    // The scrape itself is healthy and the server's own counters arrive too.
    let up =
        wait_for("up == 1", Duration::from_secs(20), || query("up{job=\"procwatch\"} == 1".into()))
            .await;
    assert_eq!(up.len(), 1);
    let ingested = wait_for("ingested samples", Duration::from_secs(20), || {
        query("procwatch_ingested_samples_total{format=\"v1\"} > 0".into())
    })
    .await;
    assert_eq!(ingested.len(), 1);
    for metric in [
        "procwatch_process_mem_percent",
        "procwatch_process_rss_bytes",
        "procwatch_host_cpu_percent",
    ] {
        wait_for(metric, Duration::from_secs(20), || query(format!("{metric}{{host=\"{HOST}\"}}")))
            .await;
    }

    // The agent's own metrics (`--metrics-listen`), scraped by the same Prometheus.
    for q in [
        "procwatch_agent_sweeps_total > 0",
        "procwatch_agent_sent_samples_total > 0",
        "procwatch_agent_resident_memory_bytes > 1e6",
        "procwatch_agent_cpu_seconds_total",
        "procwatch_agent_spool_bytes",
        "procwatch_agent_dropped_samples_total == 0",
    ] {
        let r = wait_for(q, Duration::from_secs(20), || query(q.to_owned())).await;
        assert_eq!(r[0]["metric"]["job"], "procwatch-agent", "{q}");
    }

    // The Grafana dashboard in the repository queries only metrics the server exports, in
    // PromQL this Prometheus accepts.
    let grafana: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/procwatch.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let agent_text = client
        .get(format!("http://{agent_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let text = format!("{text}{agent_text}");
    let exprs = grafana_exprs(&grafana);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in &exprs {
        for name in metric_names(e) {
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(text.contains(&format!("# TYPE {base}")), "{name} (in {e}) is not exported");
        }
        let q = e.replace("$host", ".*").replace("$topn", "10").replace("$__rate_interval", "1m");
        let r = common::json_of(
            client.get(format!("{prom_url}/api/v1/query")).query(&[("query", q.as_str())]),
        )
        .await;
        assert_eq!(r["status"], "success", "{q}: {r}");
    }
}

/// Every `expr` of every panel target.
fn grafana_exprs(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => out.extend(grafana_exprs(x)),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| out.extend(grafana_exprs(x))),
        _ => {}
    }
    out
}

/// The `procwatch_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("procwatch_") {
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn metric_names_in_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.95, sum by (le) (rate(procwatch_a_bucket[1m]))) / procwatch_b"
        ),
        ["procwatch_a_bucket", "procwatch_b"]
    );
}
