//! Hardening end to end with the real binary: SIGKILL of the server during sustained ingestion
//! from `procwatch loadgen` loses no acknowledged sample and the store opens without repair;
//! a real agent ships to a real HTTPS server it verifies with `--ca-file`; the `--insecure`
//! rule refuses an open non-loopback server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

use procwatch_store::{HistoryQuery, Storage};
use procwatch_store_sqlite::{SqliteOptions, SqliteStore};

const BIN: &str = env!("CARGO_BIN_EXE_procwatch");

fn server(data: &Path, listen: &str, addr_file: &Path, extra: &[&str]) -> Child {
    let _ = std::fs::remove_file(addr_file);
    Command::new(BIN)
        .args(["server", "--listen", listen, "--data-dir"])
        .arg(data)
        .arg("--addr-file")
        .arg(addr_file)
        .args(extra)
        .env_remove("PROCWATCH_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server")
}

fn wait_addr(addr_file: &Path, child: &mut Child) -> String {
    let url = common::wait_addr_file(child, addr_file, "the server", Duration::from_secs(30));
    url.trim_start_matches("http://").to_owned()
}

/// `HARDENING_<NAME>` from the environment, else `default` (the trials in RELIABILITY.md run
/// this test at a larger scale through these).
fn knob(name: &str, default: &str) -> String {
    std::env::var(format!("HARDENING_{name}")).unwrap_or_else(|_| default.to_owned())
}

#[test]
fn sigkill_during_loadgen_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr_file = dir.path().join("addr");
    let ack_log = dir.path().join("acks");
    let mut srv = server(&data, "127.0.0.1:0", &addr_file, &[]);
    let addr = wait_addr(&addr_file, &mut srv);
    let agents: usize = knob("AGENTS", "10").parse().unwrap();
    let processes: usize = knob("PROCESSES", "20").parse().unwrap();
    let kills: usize = knob("KILLS", "2").parse().unwrap();
    let kill_every = Duration::from_millis(knob("KILL_EVERY_MS", "1500").parse().unwrap());
    let loadgen = Command::new(BIN)
        .args(["loadgen", "--server", &format!("http://{addr}")])
        .args(["--agents", &agents.to_string(), "--processes", &processes.to_string()])
        .args(["--interval", &knob("INTERVAL", "100ms"), "--duration", &knob("DURATION", "5s")])
        .args(["--timeout", "2s"])
        .arg("--ack-log")
        .arg(&ack_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn loadgen");

    // Kills mid-run, each followed by a restart on the same address and data dir.
    for _ in 0..kills {
        // Behaviour, not synchronisation: the kills land at arbitrary points of the load.
        std::thread::sleep(kill_every);
        srv.kill().expect("SIGKILL");
        srv.wait().unwrap();
        srv = server(&data, &addr, &addr_file, &[]);
        assert_eq!(wait_addr(&addr_file, &mut srv), addr);
    }
    let out = loadgen.wait_with_output().expect("loadgen");
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    srv.kill().expect("SIGKILL at the end");
    srv.wait().unwrap();

    // Every acknowledged batch, from the ack log.
    let acks = std::fs::read_to_string(&ack_log).unwrap();
    let mut acked: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for line in acks.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "{line}");
        assert_eq!(f[3].parse::<usize>().unwrap(), processes);
        acked.entry(f[0].to_owned()).or_default().insert(f[2].parse().unwrap());
    }
    let acked_batches: usize = acked.values().map(BTreeSet::len).sum();
    assert_eq!(acked_batches as u64, report["batches_acked"].as_u64().unwrap());
    assert!(acked_batches > 50, "too little load got through: {acked_batches}");

    // The store opens as the kill left it, and holds every acknowledged sample.
    let store = SqliteStore::open(&data, SqliteOptions::default()).expect("opens without repair");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut found = 0usize;
    for (host, stamps) in &acked {
        for p in 0..processes {
            let q = HistoryQuery {
                host: host.clone(),
                process: format!("proc-{p}"),
                from: *stamps.first().unwrap(),
                to: *stamps.last().unwrap() + 1,
                step_ms: 0,
            };
            let points = rt.block_on(store.history(&q)).expect("history");
            let have: BTreeSet<i64> = points.iter().map(|pt| pt.ts).collect();
            let missing: Vec<_> = stamps.difference(&have).collect();
            assert!(missing.is_empty(), "{host} proc-{p}: acknowledged but lost: {missing:?}");
            found += stamps.len();
        }
    }
    assert_eq!(found, acked_batches * processes);
    eprintln!(
        "kill -9 x{kills}: {acked_batches} acknowledged batches, {found} samples, all stored; \
         loadgen errors: {}",
        report["errors"]
    );
    rt.block_on(store.close()).unwrap();
}

#[test]
fn agent_ships_to_https_server_verified_with_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let addr_file = dir.path().join("addr");
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let mut srv = server(&dir.path().join("data"), "127.0.0.1:0", &addr_file, &tls);
    let addr = wait_addr(&addr_file, &mut srv);
    let port = addr.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}");
    let agent = |ca: Option<&Path>, spool: &str| {
        let mut c = Command::new(BIN);
        c.args(["agent", "--once", "--server", &url, "--host", "tls-agent", "--interval", "200ms"])
            .arg("--spool-dir")
            .arg(dir.path().join(spool))
            .args(["--request-timeout", "5s"])
            .env_remove("PROCWATCH_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(ca) = ca {
            c.arg("--ca-file").arg(ca);
        }
        c.output().expect("agent")
    };
    // Without the CA the agent does not trust the server: the sweep stays spooled.
    let out = agent(None, "spool-a");
    assert!(!out.status.success(), "an unverified server must not get the batch");
    // With it, the batch is delivered.
    let out = agent(Some(&cert), "spool-b");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let client = reqwest::blocking_client(&cert);
    let body = client(&format!("{url}/api/v1/hosts"));
    assert!(body.contains("tls-agent"), "{body}");
    srv.kill().unwrap();
    srv.wait().unwrap();
}

#[test]
fn open_server_on_a_public_address_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--listen", "0.0.0.0:0", "--store", "memory"])
        .env_remove("PROCWATCH_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure") && err.contains("--write-token"), "{err}");
    // With both tokens it starts (checked through its address file, then killed).
    let addr_file = dir.path().join("addr");
    let mut srv = server(
        &dir.path().join("data"),
        "0.0.0.0:0",
        &addr_file,
        &["--write-token", "w", "--read-token", "r", "--store", "memory"],
    );
    let addr = wait_addr(&addr_file, &mut srv);
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    srv.kill().unwrap();
    srv.wait().unwrap();
}

mod reqwest {
    /// A tiny blocking GET over HTTPS trusting `ca`, on a runtime of its own.
    pub fn blocking_client(ca: &std::path::Path) -> impl Fn(&str) -> String {
        let pem = std::fs::read(ca).unwrap();
        move |url: &str| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
                let client = ::reqwest::Client::builder()
                    .add_root_certificate(::reqwest::Certificate::from_pem(&pem).unwrap())
                    .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
                    .build()
                    .unwrap();
                client.get(url).send().await.unwrap().text().await.unwrap()
            })
        }
    }
}
