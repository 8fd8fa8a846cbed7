//! A real ClickHouse cluster for tests (feature `testing`): one ZooKeeper and a 2-shard ×
//! 2-replica ClickHouse cluster, all on free loopback ports in one temp directory, each
//! process stopped by its PID on drop.
//!
//! When `clickhouse-server` or java + ZooKeeper are not installed, [`Cluster::start_or_skip`]
//! prints `SKIPPED: ...` on stderr and returns `None` (so `.ci/run`, which counts those lines,
//! fails) unless the environment variable `CI` is set, where it panics instead.
//!
//! Every process runs under a small `sh` watchdog that SIGKILLs exactly it (by PID) when the
//! pipe on its stdin closes: on drop, and also when the test process dies without dropping (a
//! cluster kept in a `static`), so nothing outlives a test binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use procwatch_model::clock::{Clock, SystemClock};

use crate::ClickHouseConfig;

/// The cluster name in every node's `<remote_servers>`.
pub const CLUSTER: &str = "procwatch";

/// `sh -c WATCHDOG <pidfile> <program> <args...>`: starts the program, writes its PID, kills it
/// with SIGKILL when stdin reaches EOF, exits with its status.
const WATCHDOG: &str = r#"exec 3<&0
pidfile="$0"
"$@" </dev/null & pid=$!
echo "$pid" > "$pidfile"
( cat <&3 >/dev/null; kill -9 "$pid" 2>/dev/null ) & wpid=$!
wait "$pid"; status=$?
kill "$wpid" 2>/dev/null
exit "$status"
"#;

const ZK_JARS: &[&str] = &["zookeeper.jar", "zookeeper-jute.jar", "slf4j-api.jar", "slf4j-nop.jar"];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The `clickhouse-server` binary: `$CLICKHOUSE_SERVER` or the first on `PATH` (or /usr/sbin).
pub fn clickhouse_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLICKHOUSE_SERVER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    on_path("clickhouse-server")
}

/// The ZooKeeper classpath (Debian's `zookeeperd` jars), if java and the jars are installed.
pub fn zookeeper_classpath() -> Option<String> {
    on_path("java")?;
    let dir = Path::new("/usr/share/java");
    let jars: Vec<PathBuf> = ZK_JARS.iter().map(|j| dir.join(j)).collect();
    jars.iter()
        .all(|j| j.is_file())
        .then(|| jars.iter().map(|j| j.display().to_string()).collect::<Vec<_>>().join(":"))
}

/// Says `SKIPPED: why` on stderr past libtest's output capture.
pub fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// One raw HTTP/1.0 exchange with a loopback port; `(status line, body)`.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(String, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
}

/// Whether ZooKeeper serves requests: its `srvr` four-letter command reports a `Mode` (`ruok`
/// answers `imok` before it accepts sessions, and a clickhouse-server whose first session
/// handshake failed crashes on its first `ON CLUSTER` DDL).
fn zk_ruok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"srvr").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.contains("Mode: standalone")
}

/// One process under the watchdog.
struct Proc {
    child: Option<Child>,
    pidfile: PathBuf,
    argv: Vec<String>,
    log: PathBuf,
}

impl Proc {
    fn new(argv: Vec<String>, pidfile: PathBuf, log: PathBuf) -> Self {
        Proc { child: None, pidfile, argv, log }
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.pidfile);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open process log");
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(&self.pidfile)
            .args(&self.argv)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn sh watchdog");
        self.child = Some(child);
    }

    /// The PID of the program itself (not of its watchdog), once written.
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    /// Signals the program, only while its watchdog runs: until the watchdog has reaped it,
    /// its PID cannot belong to another process.
    fn signal(&mut self, sig: &str) {
        let running = matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)));
        if let (true, Some(pid)) = (running, self.pid()) {
            let _ =
                Command::new("kill").arg(sig).arg(pid.to_string()).stderr(Stdio::null()).status();
        }
    }

    /// SIGKILL now (a crash); the data stays.
    fn kill(&mut self) {
        self.signal("-KILL");
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }

    /// SIGTERM, up to 10 s for a clean exit, then SIGKILL (the watchdog, on stdin EOF).
    fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("-TERM");
        let clock = SystemClock;
        let deadline = clock.instant() + Duration::from_secs(10);
        while clock.instant() < deadline && self.exited().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}

/// Polls `ready` every 50 ms until it holds or `secs` pass; `false` on timeout or when the
/// process exits (its status then goes to `why`).
fn wait_for(p: &mut Proc, secs: u64, why: &mut String, mut ready: impl FnMut() -> bool) -> bool {
    let clock = SystemClock;
    let deadline = clock.instant() + Duration::from_secs(secs);
    while clock.instant() < deadline {
        if ready() {
            return true;
        }
        if let Some(status) = p.exited() {
            *why = format!("exited with {status}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    *why = format!("not ready within {secs} s");
    false
}

/// One clickhouse-server of the cluster.
struct Node {
    proc: Proc,
    http_port: u16,
    shard: usize,
    replica: usize,
}

/// A running ZooKeeper + 2 × 2 ClickHouse cluster started by a test.
pub struct Cluster {
    dir: tempfile::TempDir,
    zk: Proc,
    zk_port: u16,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts the cluster, or returns `None` after printing `SKIPPED: ...` when a component is
    /// not installed and `CI` is unset. Panics when it is missing under `CI` or fails to start.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        let missing = match (clickhouse_binary(), zookeeper_classpath()) {
            (None, _) => Some("clickhouse-server not installed"),
            (_, None) => Some("java or ZooKeeper jars (zookeeperd) not installed"),
            _ => None,
        };
        if let Some(why) = missing {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{test}: {why} but CI is set (apt-get install clickhouse-server zookeeperd)"
                );
            }
            skipped(&format!("{why} ({test})"));
            return None;
        }
        // A port picked free may be taken before the server binds it: try fresh ports again.
        let mut last = String::new();
        for _ in 0..3 {
            match Cluster::try_start() {
                Ok(c) => return Some(c),
                Err(e) => last = e,
            }
        }
        panic!("{test}: the ClickHouse cluster did not start: {last}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let zk_port = free_port();
        let zk_dir = dir.path().join("zk");
        std::fs::create_dir_all(zk_dir.join("data")).expect("zk dir");
        std::fs::write(
            zk_dir.join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n\
                 maxSessionTimeout=20000\n",
                zk_dir.join("data").display()
            ),
        )
        .expect("zoo.cfg");
        let zk = Proc::new(
            vec![
                "java".into(),
                "-Xmx128m".into(),
                "-cp".into(),
                zookeeper_classpath().expect("zookeeper"),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
                zk_dir.join("zoo.cfg").display().to_string(),
            ],
            zk_dir.join("pid"),
            zk_dir.join("zk.log"),
        );
        // Ports: tcp, http, interserver per node.
        let ports: Vec<[u16; 3]> =
            (0..4).map(|_| [free_port(), free_port(), free_port()]).collect();
        let mut remote = String::new();
        for shard in 0..2 {
            remote.push_str("<shard><internal_replication>true</internal_replication>");
            for replica in 0..2 {
                let tcp = ports[shard * 2 + replica][0];
                remote.push_str(&format!(
                    "<replica><host>127.0.0.1</host><port>{tcp}</port></replica>"
                ));
            }
            remote.push_str("</shard>");
        }
        let bin = clickhouse_binary().expect("clickhouse-server").display().to_string();
        let mut nodes = Vec::new();
        for shard in 0..2 {
            for replica in 0..2 {
                let [tcp, http, inter] = ports[shard * 2 + replica];
                let nd = dir.path().join(format!("s{}r{}", shard + 1, replica + 1));
                std::fs::create_dir_all(&nd).expect("node dir");
                std::fs::write(nd.join("users.xml"), USERS_XML).expect("users.xml");
                let cfg = node_config(&nd, tcp, http, inter, zk_port, &remote, shard, replica);
                std::fs::write(nd.join("config.xml"), cfg).expect("config.xml");
                let proc = Proc::new(
                    vec![bin.clone(), format!("--config-file={}", nd.join("config.xml").display())],
                    nd.join("pid"),
                    nd.join("stdout.log"),
                );
                nodes.push(Node { proc, http_port: http, shard: shard + 1, replica: replica + 1 });
            }
        }
        let mut c = Cluster { dir, zk, zk_port, nodes };
        // ZooKeeper first: a clickhouse-server 18.16 that started before it could connect
        // crashes (SIGSEGV in zkutil) on its first `ON CLUSTER` DDL.
        c.zk.spawn();
        let mut why = String::new();
        let port = c.zk_port;
        if !wait_for(&mut c.zk, 30, &mut why, || zk_ruok(port)) {
            let log = std::fs::read_to_string(c.zk.log.clone()).unwrap_or_default();
            return Err(format!("zookeeper {why}:\n{log}"));
        }
        for n in &mut c.nodes {
            n.proc.spawn();
        }
        for i in 0..c.nodes.len() {
            c.wait_node_ready(i)?;
        }
        Ok(c)
    }

    /// Waits until node `i` answers a query that needs ZooKeeper.
    fn wait_node_ready(&mut self, i: usize) -> Result<(), String> {
        let n = &mut self.nodes[i];
        let port = n.http_port;
        let mut why = String::new();
        let ok = wait_for(&mut n.proc, 60, &mut why, || {
            http(port, "POST", "/", "SELECT count() FROM system.zookeeper WHERE path = '/'")
                .is_some_and(|(status, _)| status.contains(" 200 "))
        });
        if ok {
            Ok(())
        } else {
            Err(format!("clickhouse node {i} {why}:\n{}", self.node_log(i)))
        }
    }

    /// Node `i`'s error log (for failure messages).
    pub fn node_log(&self, i: usize) -> String {
        let nd = self.node_dir(i);
        let mut s = std::fs::read_to_string(nd.join("error.log")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(nd.join("stdout.log")).unwrap_or_default());
        let tail: Vec<&str> = s.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        let n = &self.nodes[i];
        self.dir.path().join(format!("s{}r{}", n.shard, n.replica))
    }

    /// `http://127.0.0.1:<port>` of node `i` (0 = shard 1 replica 1, 1 = shard 1 replica 2,
    /// 2 = shard 2 replica 1, 3 = shard 2 replica 2).
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].http_port)
    }

    /// A store configuration for database `db`, talking to node 0, writing straight to the
    /// shards ([`ClickHouseConfig::shard_urls`] = [`Cluster::shard_urls`]).
    pub fn config(&self, db: &str) -> ClickHouseConfig {
        let mut c = self.config_distributed(db);
        c.shard_urls = self.shard_urls();
        c
    }

    /// A store configuration for database `db`, talking to node 0, writing through the
    /// `Distributed` tables (no shard URLs).
    pub fn config_distributed(&self, db: &str) -> ClickHouseConfig {
        let mut c = ClickHouseConfig::new(self.url(0), CLUSTER, db);
        c.timeout = Duration::from_secs(20);
        c
    }

    /// [`Cluster::shard_urls`] as `procwatch server --clickhouse-shard-urls` takes them.
    pub fn shard_urls_flag(&self) -> String {
        self.shard_urls().iter().map(|r| r.join(",")).collect::<Vec<_>>().join(";")
    }

    /// Every shard's replicas' URLs, in cluster order (`[[node 0, node 1], [node 2, node 3]]`).
    pub fn shard_urls(&self) -> Vec<Vec<String>> {
        vec![vec![self.url(0), self.url(1)], vec![self.url(2), self.url(3)]]
    }

    /// Runs one SQL statement on node `i` directly; the body on 200, else the error text.
    pub fn sql(&self, i: usize, sql: &str) -> Result<String, String> {
        self.sql_with(i, "", sql)
    }

    /// [`Cluster::sql`] with ClickHouse settings as a query string (`insert_distributed_sync=1`).
    pub fn sql_with(&self, i: usize, settings: &str, sql: &str) -> Result<String, String> {
        match http(self.nodes[i].http_port, "POST", &format!("/?{settings}"), sql) {
            Some((status, body)) if status.contains(" 200 ") => Ok(body),
            Some((status, body)) => Err(format!("{status}: {body}")),
            None => Err("no answer".into()),
        }
    }

    /// Total bytes on disk of the parts of `db.table` on node `i` (`system.parts`, active).
    pub fn bytes_on_disk(&self, i: usize, db: &str, table: &str) -> u64 {
        let q = format!(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = '{db}' \
             AND table = '{table}'"
        );
        self.sql(i, &q).ok().and_then(|b| b.trim().parse().ok()).unwrap_or(0)
    }

    /// SIGKILLs node `i` (a crash); its data stays for [`Cluster::restart_node`].
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].proc.kill();
    }

    /// Starts node `i` again on the same directory and ports and waits until it is ready.
    pub fn restart_node(&mut self, i: usize) {
        self.nodes[i].proc.kill();
        self.nodes[i].proc.spawn();
        if let Err(e) = self.wait_node_ready(i) {
            panic!("clickhouse node {i} did not restart: {e}");
        }
    }

    /// SIGKILLs ZooKeeper.
    pub fn kill_zookeeper(&mut self) {
        self.zk.kill();
    }

    /// Starts ZooKeeper again on the same data and port and waits for `ruok`.
    pub fn restart_zookeeper(&mut self) {
        self.zk.kill();
        self.zk.spawn();
        let port = self.zk_port;
        let mut why = String::new();
        if !wait_for(&mut self.zk, 30, &mut why, || zk_ruok(port)) {
            panic!("zookeeper did not restart: {why}");
        }
    }

    /// Waits until no replicated table of any node is read-only (ZooKeeper sessions back after
    /// [`Cluster::restart_zookeeper`]); panics after `secs`.
    pub fn wait_writable(&mut self, secs: u64) {
        for i in 0..self.nodes.len() {
            let port = self.nodes[i].http_port;
            let mut why = String::new();
            let writable = wait_for(&mut self.nodes[i].proc, secs, &mut why, || {
                http(port, "POST", "/", "SELECT count() FROM system.replicas WHERE is_readonly")
                    .is_some_and(|(status, body)| status.contains(" 200 ") && body.trim() == "0")
            });
            assert!(writable, "clickhouse node {i} still read-only after {secs} s: {why}");
        }
    }

    /// The PIDs of the running programs (not their watchdogs), named `zk` and `s1r1`..`s2r2`:
    /// for measurements that read `/proc/PID/stat`.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> =
            self.zk.pid().map(|p| ("zk".to_string(), p)).into_iter().collect();
        for n in &self.nodes {
            if let Some(p) = n.proc.pid() {
                out.push((format!("s{}r{}", n.shard, n.replica), p));
            }
        }
        out
    }

    /// `127.0.0.1:<port>` of ZooKeeper.
    pub fn zookeeper_addr(&self) -> String {
        format!("127.0.0.1:{}", self.zk_port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.proc.stop();
        }
        self.zk.stop();
    }
}

const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><log_queries>0</log_queries></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"#;

#[allow(clippy::too_many_arguments)]
fn node_config(
    nd: &Path,
    tcp: u16,
    http: u16,
    inter: u16,
    zk: u16,
    remote: &str,
    shard: usize,
    replica: usize,
) -> String {
    let d = nd.display();
    format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog>
    <size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp}</tcp_port>
  <http_port>{http}</http_port>
  <interserver_http_port>{inter}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <remote_servers><{CLUSTER}>{remote}</{CLUSTER}></remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node>
    <session_timeout_ms>6000</session_timeout_ms></zookeeper>
  <macros><shard>{s}</shard><replica>s{s}r{r}</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
"#,
        s = shard + 1,
        r = replica + 1,
    )
}
