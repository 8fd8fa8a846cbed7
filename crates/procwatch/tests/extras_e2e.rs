//! Issue 19, the opt-in extra metrics, through the real binaries: `procwatch agent
//! --metrics all` ships to `procwatch server --store memory` over HTTP, and a child process
//! with known figures shows them in `/api/v1/usage`, its history, `group_by=unit` and
//! `/metrics`:
//!
//! - fds: the child holds 40 files open → fds in [43, 60] (stdio and the interpreter's own);
//! - threads: it starts 5 threads → threads in [6, 8];
//! - io: on request it writes 8 MiB, fsyncs, drops the file from the page cache and reads it
//!   back → the history's bytes (Σ rate × Δt over raw points) in [0.7, 1.5] × 8 MiB each way;
//! - ctxsw: its main thread sleeps 10 ms in a loop → some voluntary switches per second;
//! - a rule `metric = "fds"`, threshold 40, turns RED for it;
//! - owner: the test's own user; unit: the cgroup v2 group the test creates and moves it into
//!   (SKIPPED, visibly, only where the machine has no cgroup v2 or it cannot be written).
//!
//! Every child is stopped by PID on drop; the cgroup is removed after.

use std::path::PathBuf;
use std::time::Duration;

mod common;
use common::Proc;
use serde_json::Value;

const WRITE: &str = "w-token-extras";
const READ: &str = "r-token-extras";
const HOST: &str = "extras-e2e";
const FILES: usize = 40;
const THREADS: usize = 5;
const MIB: u64 = 8;

/// The child: names itself, opens FILES files, starts THREADS threads, says `ready`, then
/// sleeps 10 ms in a loop; when `go` appears it does its I/O once and says `done`.
const CHILD: &str = r#"
import ctypes, os, sys, threading, time
name, d, files, threads, mib = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
held = [open(os.path.join(d, "held-%d" % i), "w") for i in range(files)]
stop = threading.Event()
ts = [threading.Thread(target=stop.wait, daemon=True) for _ in range(threads)]
for t in ts: t.start()
open(os.path.join(d, "ready"), "w").close()
go, done = os.path.join(d, "go"), os.path.join(d, "done")
did = False
while True:
    time.sleep(0.01)
    if not did and os.path.exists(go):
        did = True
        p = os.path.join(d, "data")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        buf = b"x" * (1 << 20)
        for _ in range(mib): os.write(fd, buf)
        os.fsync(fd); os.close(fd)
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 1 << 20): pass
        os.close(fd)
        open(done + ".tmp", "w").close(); os.rename(done + ".tmp", done)
"#;

/// The cgroup v2 mount point, from `/proc/self/mounts`.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

/// A cgroup the test created, removed on drop: whatever is still in it (the child, if a
/// failed assertion unwinds before the child is stopped) goes back to the root group first.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let dir = &self.0;
        if let (Ok(procs), Some(root)) =
            (std::fs::read_to_string(dir.join("cgroup.procs")), dir.parent())
        {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        common::poll_for(Duration::from_secs(10), || std::fs::remove_dir(dir).ok());
    }
}

/// Creates a cgroup and moves `pid` into it; `None` (with the reason) when it cannot.
fn cgroup_for(pid: u32, name: &str) -> Result<Cgroup, String> {
    let root = cgroup2_root().ok_or("this machine has no cgroup v2 mounted")?;
    let dir = root.join(name);
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cg = Cgroup(dir.clone());
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .map_err(|e| format!("cannot move the child into {}: {e}", dir.display()))?;
    Ok(cg)
}

/// The name of the user running the test, from `/etc/passwd`.
fn my_user() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    let uid = uid.split_whitespace().next().unwrap().to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
        })
        .unwrap_or(uid)
}

async fn get(client: &reqwest::Client, url: &str) -> Option<Value> {
    common::try_get_json(client, url, Some(READ)).await
}

/// Σ rate × Δt over raw history points (the rate of a point covers the time since the one
/// before), in MiB.
fn integral_mib(extras: &[Value], key: &str) -> f64 {
    let mut total = 0.0;
    for w in extras.windows(2) {
        let dt = (w[1]["ts"].as_i64().unwrap() - w[0]["ts"].as_i64().unwrap()) as f64 / 1000.0;
        total += w[1][key].as_f64().unwrap_or(0.0) * dt;
    }
    total / (1u64 << 20) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_s_extras_reach_the_server() {
    if common::which("python3").is_none() {
        common::skip_or_fail("python3 is not installed");
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let work = dir.path().join("child");
    std::fs::create_dir(&work).unwrap();
    let name = format!("pwx{}", std::process::id());
    let mut child = Proc::spawn(
        "python3 child",
        std::process::Command::new("python3").args(["-c", CHILD, &name]).arg(&work).args([
            FILES.to_string(),
            THREADS.to_string(),
            MIB.to_string(),
        ]),
    );
    common::wait_until("the child to be ready", Duration::from_secs(60), || {
        child.assert_running();
        work.join("ready").exists().then_some(())
    });
    let cgroup = match cgroup_for(child.child.id(), &format!("procwatch-test-{name}")) {
        Ok(cg) => Some(cg),
        Err(why) => {
            common::skip_or_fail(&format!("unit attribution not tested: {why}"));
            None
        }
    };

    // A RED threshold on an extra metric (fds): the child holds more than 40 open.
    let rules = format!("[[rules]]\nprocess = \"{name}\"\nmetric = \"fds\"\nthreshold = 40\n");
    let (_server, url) = common::start_memory_server(dir.path(), &rules, WRITE, READ);
    let mut agent = Proc::spawn(
        "procwatch agent",
        common::procwatch()
            .arg("agent")
            .args(["--server", &url, "--interval", "500ms", "--host", HOST])
            .args(["--metrics", "all", "--token", WRITE])
            .arg("--spool-dir")
            .arg(dir.path().join("spool")),
    );
    let client = reqwest::Client::new();

    // Hostile extras first: refused whole, with the sample and field named.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let now = now.as_millis() as i64;
    for (extras, field) in [
        (serde_json::json!({"owner": "o".repeat(10_000), "fds": 5}), "extras.owner"),
        (serde_json::json!({"fds_pct": 1e6}), "extras.fds_pct"),
        (serde_json::json!({"read_bps": -1.0}), "extras.read_bps"),
    ] {
        let batch = serde_json::json!({"host": HOST, "samples": [
            {"ts": now, "process": "x", "cpu": 1.0, "mem": 1.0, "extras": extras}]});
        let r = client
            .post(format!("{url}/api/v1/samples"))
            .bearer_auth(WRITE)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["problems"][0]["field"], field, "{body}");
        assert_eq!(body["problems"][0]["index"], 0, "{body}");
    }

    // fds, threads, owner and unit in usage.
    let usage_url = format!(
        "{url}/api/v1/usage?host={HOST}&process={name}&window=1m&metrics=cpu,fds,threads,ctxsw,owner,unit"
    );
    let unit_want =
        cgroup.as_ref().map(|c| format!("/{}", c.0.file_name().unwrap().to_str().unwrap()));
    let row =
        common::wait_until_async("the child's extras in usage", Duration::from_secs(90), || {
            agent.assert_running();
            let (client, usage_url, unit_want) = (&client, &usage_url, &unit_want);
            async move {
                let v = get(client, usage_url).await?;
                let row = v["rows"].as_array()?.first()?.clone();
                let fds = row["extras"]["fds"]["last"].as_f64()?;
                let unit_ok = unit_want.is_none() || row["unit"].as_str().is_some();
                (fds >= FILES as f64 && unit_ok).then_some(row)
            }
        })
        .await;
    let fds = row["extras"]["fds"]["last"].as_f64().unwrap();
    assert!((43.0..=60.0).contains(&fds), "fds {fds}: {row}");
    let threads = row["extras"]["threads"]["last"].as_f64().unwrap();
    assert!((6.0..=8.0).contains(&threads), "threads {threads}: {row}");
    assert!(row["extras"]["fds_pct"].is_null(), "not asked for: {row}");
    assert_eq!(row["owner"].as_str(), Some(my_user().as_str()), "{row}");
    if let Some(want) = &unit_want {
        assert_eq!(row["unit"].as_str(), Some(want.as_str()), "{row}");
    }
    let vol = common::wait_until_async("voluntary switches", Duration::from_secs(60), || async {
        let v = get(&client, &usage_url).await?;
        let max = v["rows"][0]["extras"]["ctxsw_vol"]["max"].as_f64()?;
        (max > 1.0).then_some(max)
    })
    .await;
    assert!(vol < 100_000.0, "ctxsw_vol {vol}");

    // io: ask for it, then find the bytes in the raw history.
    std::fs::write(work.join("go"), "").unwrap();
    common::wait_until("the child's I/O", Duration::from_secs(120), || {
        child.assert_running();
        work.join("done").exists().then_some(())
    });
    let hist_url = format!("{url}/api/v1/hosts/{HOST}/processes/{name}/history?from=now-5m");
    let (w, r) =
        common::wait_until_async("the I/O in the history", Duration::from_secs(90), || async {
            let v = get(&client, &hist_url).await?;
            let extras = v["extras"].as_array()?.clone();
            let (w, r) = (integral_mib(&extras, "write_bps"), integral_mib(&extras, "read_bps"));
            (w >= 0.7 * MIB as f64 && r >= 0.7 * MIB as f64).then_some((w, r))
        })
        .await;
    let hi = 1.5 * MIB as f64;
    assert!(w <= hi && r <= hi, "written {w:.2} MiB, read {r:.2} MiB of {MIB}");
    eprintln!("extras_e2e: fds {fds}, threads {threads}, ctxsw_vol max {vol:.1}/s, written {w:.2} MiB, read {r:.2} MiB, unit {:?}", row["unit"]);

    // The fds rule fired: a RED alarm on metric fds for the child.
    let alarms_url = format!("{url}/api/v1/alarms?active=true&host={HOST}&process={name}");
    let red = common::wait_until_async("the fds alarm", Duration::from_secs(60), || async {
        let v = get(&client, &alarms_url).await?;
        let hit = v["alarms"].as_array()?.iter().find(|a| a["metric"] == "fds")?.clone();
        (hit["level"] == "RED").then_some(hit)
    })
    .await;
    assert!(red["value"].as_f64().unwrap() > 40.0, "{red}");

    // group_by=unit: the child's unit is a row of its own.
    if let Some(want) = &unit_want {
        let g = get(&client, &format!("{url}/api/v1/usage?host={HOST}&window=1m&group_by=unit"))
            .await
            .expect("group_by answers");
        let rows = g["rows"].as_array().unwrap();
        let row = rows.iter().find(|r| r["process"] == want.as_str());
        assert!(row.is_some_and(|r| r["count"].as_u64() >= Some(1)), "{g}");
        assert!(rows.iter().all(|r| r["host"].is_null()), "{g}");
    }

    // /metrics exports them for the rows its cardinality cap keeps (the top 20 of the host
    // by cpu: the idle child may not be one of them, so any of this host's series will do).
    let text = common::wait_until_async("extras in /metrics", Duration::from_secs(30), || async {
        let r = client.get(format!("{url}/metrics")).bearer_auth(READ).send().await.ok()?;
        r.text().await.ok().filter(|t| t.contains("procwatch_process_fds{"))
    })
    .await;
    assert!(text.contains(&format!("host=\"{HOST}\"")), "{text}");
    assert!(text.contains("# TYPE procwatch_process_threads gauge"), "{text}");

    drop(child);
    drop(cgroup);
}
