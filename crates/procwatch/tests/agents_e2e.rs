//! The control channel end to end with the real binaries: `procwatch server` (embedded store,
//! restarted on its port) and `procwatch agent` (restarted on its spool), steered with
//! `POST /api/v1/agents/directives` and `procwatch agents set`, observed in what the server
//! receives (`/api/v1/hosts`, `/api/v1/usage`) and in `procwatch agents`. Every wait is on an
//! observable condition with a deadline.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};

mod common;

use common::{procwatch, wait_until_async, Proc};

const WRITE: &str = "agents-e2e-write";
const READ: &str = "agents-e2e-read";
const ADMIN: &str = "agents-e2e-admin";
const HOST: &str = "agents-e2e-1";
const LIMIT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn start_server(dir: &Path, port: u16, admin: bool) -> (Proc, String) {
    std::fs::create_dir_all(dir).unwrap();
    let addr_file = dir.join(format!("server-{port}.addr"));
    let _ = std::fs::remove_file(&addr_file);
    let mut cmd = procwatch();
    cmd.arg("server")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--interval", "300ms"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--write-token", WRITE, "--read-token", READ])
        .arg("--addr-file")
        .arg(&addr_file);
    if admin {
        cmd.args(["--admin-token", ADMIN]);
    }
    let mut server = Proc::spawn("procwatch server", &mut cmd);
    let url = server.wait_for_addr(&addr_file, LIMIT);
    (server, url)
}

fn start_agent(dir: &Path, url: &str) -> Proc {
    start_agent_as(dir, url, HOST, "300ms")
}

fn start_agent_as(dir: &Path, url: &str, host: &str, interval: &str) -> Proc {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).unwrap();
    let child = procwatch()
        .args(["agent", "--server", url, "--interval", interval, "--host", host])
        .args(["--token", WRITE, "--spool-fsync", "false"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn procwatch agent");
    Proc { child, name: "procwatch agent".into() }
}

async fn get(c: &reqwest::Client, url: &str, token: &str) -> Option<Value> {
    common::try_get_json(c, url, Some(token)).await
}

/// The registry's entry of HOST, once `ok` holds for it.
async fn agent_where(
    c: &reqwest::Client,
    url: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    agent_of(c, url, HOST, what, ok).await
}

/// The registry's entry of `host`, once `ok` holds for it.
async fn agent_of(
    c: &reqwest::Client,
    url: &str,
    host: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_until_async(what, LIMIT, || async {
        let v = get(c, &format!("{url}/api/v1/agents"), READ).await?;
        v["agents"].as_array()?.iter().find(|a| a["host"] == host && ok(a)).cloned()
    })
    .await
}

async fn post_directive(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = c.post(format!("{url}/api/v1/agents/directives")).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn cli(args: &[&str]) -> Output {
    procwatch().args(args).output().expect("run procwatch")
}

/// The processes of HOST's samples taken at or after `from` (once there are some).
async fn processes_since(c: &reqwest::Client, url: &str, from: i64) -> Vec<String> {
    wait_until_async("samples after the directive", LIMIT, || async {
        let q = format!("{url}/api/v1/usage?host={HOST}&from={from}&limit=1000");
        let v = get(c, &q, READ).await?;
        let rows = v["rows"].as_array().or_else(|| v.as_array())?;
        let names: Vec<String> =
            rows.iter().filter_map(|r| r["process"].as_str().map(str::to_owned)).collect();
        (!names.is_empty()).then_some(names)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_steer_a_running_agent_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (mut server, url) = start_server(dir.path(), port, true);
    let mut agent = start_agent(dir.path(), &url);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let first =
        agent_where(&c, &url, "the agent in the registry", |a| a["steerable"] == true).await;
    assert_eq!(
        (first["directive_version"].as_u64(), first["interval_ms"].as_u64()),
        (Some(0), Some(300))
    );

    // The alarm stream carries the change as `event: directive` (it is not replayed, so the
    // stream must be open, its first `synced` event read, before the change is posted).
    let (open_tx, open_rx) = tokio::sync::oneshot::channel();
    let stream = {
        let c = c.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut r = c
                .get(format!("{url}/api/v1/alarms/stream"))
                .bearer_auth(READ)
                .send()
                .await
                .unwrap();
            let mut text = String::new();
            let mut open_tx = Some(open_tx);
            while let Ok(Some(chunk)) = r.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.contains("event: synced") {
                    if let Some(tx) = open_tx.take() {
                        let _ = tx.send(());
                    }
                }
                if text.contains("event: directive") && text.contains("procwatch*") {
                    return text;
                }
            }
            text
        })
    };
    tokio::time::timeout(LIMIT, open_rx).await.expect("the stream opens").unwrap();

    // Interval and filter: observed in what the server receives.
    let (status, body) = post_directive(
        &c,
        &url,
        Some(ADMIN),
        &json!({"hosts": "agents-e2e-*", "set": {"interval": "1s", "include": ["procwatch*"]}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["directive"]["version"], 1);
    assert_eq!(body["directive"]["who"].as_str().map(|w| w.starts_with("admin")), Some(true));
    agent_where(&c, &url, "the agent running v1", |a| {
        a["directive_version"] == 1 && a["interval_ms"] == 1000
    })
    .await;
    let applied = now_ms();
    wait_until_async("batches at the new interval", LIMIT, || async {
        let v = get(&c, &format!("{url}/api/v1/hosts"), READ).await?;
        let h = v["hosts"].as_array()?.iter().find(|h| h["host"] == HOST)?.clone();
        (h["interval_ms"] == 1000).then_some(())
    })
    .await;
    let names = processes_since(&c, &url, applied).await;
    assert!(names.iter().all(|n| n.starts_with("procwatch")), "filtered: {names:?}");
    let events = tokio::time::timeout(LIMIT, stream).await.expect("directive event").unwrap();
    assert!(events.contains("\"version\":1"), "{events}");

    // A directive the agent cannot apply: refused, the agent runs on with v1.
    let (status, body) = post_directive(
        &c,
        &url,
        Some(ADMIN),
        &json!({"hosts": HOST, "set": {"interval": "500ms"}}),
    )
    .await;
    assert_eq!(status, 201, "the server leaves range checks to the agent: {body}");
    let refused =
        agent_where(&c, &url, "the agent refusing v2", |a| a["directive_error"]["version"] == 2)
            .await;
    assert_eq!(
        (refused["directive_version"].as_u64(), refused["interval_ms"].as_u64()),
        (Some(1), Some(1000))
    );
    assert!(
        refused["directive_error"]["message"].as_str().unwrap().contains("out of range"),
        "{refused}"
    );
    agent.assert_running();
    let seen = refused["last_seen"].as_i64().unwrap();
    agent_where(&c, &url, "the agent still posting", |a| a["last_seen"].as_i64() > Some(seen))
        .await;
    let out = cli(&["agents", "--server", &url, "--token", READ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(HOST) && text.contains("refused directive v2"),
        "{text}"
    );

    // Both restart: the server keeps the directives, the agent its settings (the server's
    // registry starts empty, so what it lists now is what the new agent reports).
    drop(agent);
    drop(server);
    let (s2, url2) = start_server(dir.path(), port, true);
    server = s2;
    assert_eq!(url2, url);
    let log =
        get(&c, &format!("{url}/api/v1/agents/directives"), READ).await.expect("directive log");
    assert_eq!(log["directives"].as_array().map(Vec::len), Some(2), "{log}");
    agent = start_agent(dir.path(), &url);
    let back = agent_where(&c, &url, "the restarted agent", |a| a["steerable"] == true).await;
    assert_eq!(
        (back["directive_version"].as_u64(), back["interval_ms"].as_u64()),
        (Some(1), Some(1000)),
        "{back}"
    );
    assert_eq!(back["directive_error"]["version"], 2);

    // The CLI, pause and resume: a paused agent sends heartbeats but no samples.
    let out = cli(&[
        "agents",
        "set",
        HOST,
        "interval=1s",
        "paused=true",
        "--server",
        &url,
        "--admin-token",
        ADMIN,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("directive v3"));
    let paused = agent_where(&c, &url, "the agent paused", |a| {
        a["paused"] == true && a["directive_version"] == 3
    })
    .await;
    assert!(paused["directive_error"].is_null(), "v3 overrides v2's interval: {paused}");
    let hb = paused["last_seen"].as_i64().unwrap();
    agent_where(&c, &url, "a heartbeat while paused", |a| {
        a["last_seen"].as_i64() > Some(hb + 1500)
    })
    .await;
    let out = cli(&[
        "agents",
        "set",
        HOST,
        "paused=false",
        "sweep=now",
        "--server",
        &url,
        "--admin-token",
        ADMIN,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent_where(&c, &url, "the agent resumed", |a| {
        a["paused"] == false && a["directive_version"] == 4
    })
    .await;
    let resumed = now_ms();
    let names = processes_since(&c, &url, resumed).await;
    assert!(names.iter().all(|n| n.starts_with("procwatch")), "still filtered: {names:?}");
    let out = cli(&["agents", "--server", &url, "--token", READ, "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["directive_version"], 4);

    // Which extra metrics are collected: none from the flags, threads once a directive asks.
    let threads_since = |from: i64| {
        let (c, url) = (&c, &url);
        async move {
            let q = format!("{url}/api/v1/usage?host={HOST}&from={from}&metrics=cpu,threads");
            let v = get(c, &q, READ).await?;
            let rows = v["rows"].as_array()?.clone();
            (!rows.is_empty()).then(|| {
                rows.iter()
                    .filter_map(|r| r["extras"]["threads"]["last"].as_f64())
                    .collect::<Vec<f64>>()
            })
        }
    };
    let before: Vec<f64> =
        wait_until_async("samples before the metrics directive", LIMIT, || threads_since(resumed))
            .await;
    assert!(before.is_empty(), "no extra metric asked for yet: {before:?}");
    let out =
        cli(&["agents", "set", HOST, "metrics=threads", "--server", &url, "--admin-token", ADMIN]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent_where(&c, &url, "the agent on v5", |a| a["directive_version"] == 5).await;
    let applied = now_ms();
    let threads = wait_until_async("thread counts after the metrics directive", LIMIT, || async {
        let t: Vec<f64> = threads_since(applied).await?;
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert!(threads.iter().all(|&t| t >= 1.0), "a process has at least one thread: {threads:?}");
    agent.assert_running();
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_required_and_hostile_directives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = reqwest::Client::new();
    let ok = json!({"hosts": "web-*", "set": {"paused": true}});

    // No admin token configured: admin routes are disabled, with a reason to act on.
    let (_off, url) = start_server(&dir.path().join("off"), common::free_port(), false);
    let (status, body) = post_directive(&c, &url, Some(ADMIN), &ok).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--admin-token"), "{body}");

    let (_on, url) = start_server(&dir.path().join("on"), common::free_port(), true);
    for (token, want) in [(None, 401), (Some("wrong"), 401), (Some(READ), 403), (Some(WRITE), 403)]
    {
        let (status, body) = post_directive(&c, &url, token, &ok).await;
        assert_eq!(status, want, "{token:?}: {body}");
        assert!(body["error"].is_string(), "JSON error: {body}");
    }
    // Reading the registry takes the read token, not the admin one.
    assert!(get(&c, &format!("{url}/api/v1/agents"), ADMIN).await.is_none());
    assert!(get(&c, &format!("{url}/api/v1/agents"), READ).await.is_some());

    let hostile = [
        (json!({"hosts": "web-*", "set": {"include": vec!["a*"; 33]}}), "set.include"),
        (json!({"hosts": "x".repeat(300), "set": {"paused": true}}), "hosts"),
        (json!({"hosts": "web-*", "set": {"exclude": ["*".repeat(200)]}}), "set.exclude[0]"),
        (json!({"hosts": "web-*", "set": {"interval": "soon"}}), "set.interval"),
        (json!({"hosts": "web-*", "set": {}}), "set"),
        (json!({"hosts": "web 1", "set": {"paused": true}}), "hosts"),
    ];
    for (body, field) in hostile {
        let (status, answer) = post_directive(&c, &url, Some(ADMIN), &body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["problems"][0]["field"], field, "{answer}");
    }
    for body in [
        json!({"hosts": "web-*", "set": {"colour": "red"}}),
        json!({"hosts": "web-*", "set": {"paused": true}, "extra": 1}),
    ] {
        let (status, answer) = post_directive(&c, &url, Some(ADMIN), &body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("unknown field"), "{answer}");
    }
    let huge = json!({"hosts": "web-*", "set": {"paused": true}, "pad": "x".repeat(64 * 1024)});
    let (status, answer) = post_directive(&c, &url, Some(ADMIN), &huge).await;
    assert_eq!(status, 413, "{answer}");
    // The server closes a connection whose body it did not read: go on with a fresh pool.
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{url}/api/v1/agents/directives"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/plain")
        .body(ok.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // None of these reached the log.
    let log = get(&c, &format!("{url}/api/v1/agents/directives"), READ).await.unwrap();
    assert_eq!(log["directives"], json!([]));

    // The server refuses to start with an admin token equal to another role's.
    let out = procwatch()
        .args(["server", "--listen", "127.0.0.1:0", "--store", "memory"])
        .args(["--write-token", WRITE, "--read-token", READ, "--admin-token", READ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must differ"), "{out:?}");
}

/// The evaluation passes the server has run (`/metrics`).
async fn evaluations(c: &reqwest::Client, url: &str) -> Option<u64> {
    let r = c.get(format!("{url}/metrics")).bearer_auth(READ).send().await.ok()?;
    let text = r.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("procwatch_alarm_evaluation_duration_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
}

/// The `host_silent` events of `host`, open or closed.
async fn host_silent_events(c: &reqwest::Client, url: &str, host: &str) -> Vec<Value> {
    let v = get(c, &format!("{url}/api/v1/alarms?host={host}&limit=0"), READ)
        .await
        .expect("the alarm log");
    v["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .filter(|e| e["kind"] == "host_silent")
        .cloned()
        .collect()
}

/// Issue 19: a host paused by an operator raises no host-silent alarm while its agent keeps
/// heartbeating (silence is judged on heartbeats for a paused host), and does raise one once
/// the paused agent really dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_host_is_not_silent_while_it_heartbeats_but_is_once_its_agent_dies() {
    const PAUSED: &str = "agents-e2e-pause";
    // The agent's interval: the host is silent after 3 of them without data (3 s).
    const SILENT_AFTER_MS: i64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server(dir.path(), common::free_port(), true);
    let mut agent = start_agent_as(dir.path(), &url, PAUSED, "1s");
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let host_entry = |v: Value| -> Option<Value> {
        v["hosts"].as_array()?.iter().find(|h| h["host"] == PAUSED).cloned()
    };
    wait_until_async("the host's samples in the store", LIMIT, || async {
        let h = host_entry(get(&c, &format!("{url}/api/v1/hosts"), READ).await?)?;
        (h["interval_ms"] == 1000 && h["stale"] == false).then_some(())
    })
    .await;

    let out =
        cli(&["agents", "set", PAUSED, "paused=true", "--server", &url, "--admin-token", ADMIN]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent_of(&c, &url, PAUSED, "the agent reporting paused", |a| a["paused"] == true).await;
    // No data any more: wait until the server has had none for well past the silence limit...
    wait_until_async("the paused host's data older than the silence limit", LIMIT, || async {
        let h = host_entry(get(&c, &format!("{url}/api/v1/hosts"), READ).await?)?;
        (h["age_ms"].as_i64()? > SILENT_AFTER_MS + 1_500).then_some(())
    })
    .await;
    // ... then for alarm passes after that moment (any of which would raise host-silent), while
    // the agent kept heartbeating.
    let passes = wait_until_async("the evaluation metric", LIMIT, || evaluations(&c, &url)).await;
    let beat = agent_of(&c, &url, PAUSED, "a heartbeat", |a| a["paused"] == true).await;
    let beat = beat["last_seen"].as_i64().unwrap();
    wait_until_async("three more alarm passes", LIMIT, || async {
        (evaluations(&c, &url).await? >= passes + 3).then_some(())
    })
    .await;
    agent_of(&c, &url, PAUSED, "a later heartbeat", |a| {
        a["paused"] == true && a["last_seen"].as_i64() > Some(beat)
    })
    .await;
    agent.assert_running();
    let silent = host_silent_events(&c, &url, PAUSED).await;
    assert!(silent.is_empty(), "a host paused on purpose went silent: {silent:?}");

    // The paused agent dies (killed by its PID): no heartbeat any more, so the host is silent.
    agent.child.kill().expect("SIGKILL the agent");
    agent.child.wait().expect("reap the agent");
    let silent = wait_until_async("the dead paused agent's host-silent alarm", LIMIT, || async {
        let open: Vec<Value> = host_silent_events(&c, &url, PAUSED)
            .await
            .into_iter()
            .filter(|e| e["end"].is_null())
            .collect();
        (!open.is_empty()).then_some(open)
    })
    .await;
    assert_eq!((silent.len(), &silent[0]["level"]), (1, &json!("RED")), "{silent:?}");
    server.assert_running();
}
