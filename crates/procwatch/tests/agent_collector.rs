//! The collector and `procwatch agent` against real child processes.
//!
//! Children are copies of system programs (`sh`, `sleep`, `perl`) under unique, long file
//! names in a temp dir, so each test looks only at its own process group whatever else runs on
//! the machine. Tests that measure CPU hold one lock so they do not compete with each other;
//! the busy loop runs at nice -20 (when allowed) pinned to one CPU so that other load on the
//! machine does not starve it.

#![cfg(target_os = "linux")]

use procwatch_collector::{new_collector, sys, Collector, CollectorKind, CollectorOptions, Sweep};
use procwatch_model::precision::{round_cores, round_percent, CORES_SCALE, PERCENT_SCALE};
use procwatch_model::{Batch, Sample};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child process killed (by its PID) and reaped on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A unique name, longer than the kernel's 15-byte comm.
fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("pwtest-{tag}-{}-{n}", std::process::id())
}

/// Copies the program `prog` (looked up in PATH) to `dir/name`.
fn copy_program(dir: &Path, prog: &str, name: &str) -> PathBuf {
    let src = ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{prog} not found in /usr/bin or /bin"));
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).expect("copy program");
    dst
}

fn spawn(cmd: &mut Command) -> Kid {
    // A freshly copied executable can be briefly "text file busy"; retry a few times.
    for _ in 0..50 {
        match cmd.spawn() {
            Ok(c) => return Kid(c),
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                // A retry pause (ETXTBSY: another test's fork still holds the file open).
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
    panic!("spawn {cmd:?}: text file busy");
}

fn proc_collector(per_pid: bool) -> Box<dyn Collector + Send> {
    new_collector(
        CollectorKind::Proc,
        CollectorOptions { include_kernel_threads: false, per_pid, ..Default::default() },
    )
    .unwrap()
}

/// Primes, waits `interval`, sweeps.
fn one_sweep(c: &mut dyn Collector, interval: Duration) -> Sweep {
    assert!(c.sweep().unwrap().is_none(), "the first sweep primes");
    // Behaviour, not synchronisation: the sweep measures over this interval.
    std::thread::sleep(interval);
    c.sweep().unwrap().expect("second sweep measures")
}

fn group<'a>(sweep: &'a Sweep, name: &str) -> &'a Sample {
    sweep.samples.iter().find(|s| s.process == name).unwrap_or_else(|| {
        let names: Vec<_> = sweep.samples.iter().map(|s| &s.process).collect();
        panic!("no group {name:?} in {names:?}")
    })
}

/// Waits until the child's comm is its final name (the exec has happened).
fn wait_exec(pid: u32, name: &str) {
    let want = &name[..name.len().min(15)];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.trim_end() == want {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("pid {pid} never became {want}");
}

/// utime + stime of a process, clock ticks.
fn pid_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    after[11].parse::<u64>().unwrap() + after[12].parse::<u64>().unwrap()
}

fn within(value: f64, expected: f64, rel: f64) -> bool {
    (value - expected).abs() <= rel * expected
}

/// A single-threaded busy loop: `sh -c 'while :; do :; done'` under a unique long name,
/// pinned to the last CPU (`taskset`), in a session of its own (`setsid`) whose scheduler
/// autogroup and nice value are -20 where allowed. With autogroups on, a nice value only ranks
/// tasks inside one session, so the spinner needs its own favoured group to get a whole core
/// while other sessions compile on the same CPUs.
fn spawn_spinner(dir: &Path) -> (Kid, String) {
    let name = unique_name("spin");
    let sh = copy_program(dir, "sh", &name);
    let last_cpu = (sys::online_cpus() - 1).to_string();
    let has = |prog: &str| {
        Command::new(prog)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let mut argv: Vec<String> = Vec::new();
    if has("setsid") {
        argv.push("setsid".into());
    }
    argv.extend(["nice", "-n", "-20"].map(String::from));
    if has("taskset") {
        argv.extend(["taskset".into(), "-c".into(), last_cpu]);
    }
    argv.push(sh.display().to_string());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).args(["-c", "while :; do :; done"]).stderr(Stdio::null());
    let kid = spawn(&mut cmd);
    wait_exec(kid.0.id(), &name);
    // Best effort: fails without CAP_SYS_NICE or without autogroups, which is fine.
    let _ = std::fs::write(format!("/proc/{}/autogroup", kid.0.id()), "-20");
    (kid, name)
}

#[test]
fn busy_loop_reads_one_core_on_both_collectors() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_kid, name) = spawn_spinner(dir.path());
    let ncpu = sys::online_cpus() as f64;

    let mut proc_c = proc_collector(false);
    let mut sysinfo_c = new_collector(CollectorKind::Sysinfo, CollectorOptions::default()).unwrap();
    // How much CPU the spinner gets depends on what else runs on the machine: the truth to
    // compare with is the kernel's own count of its ticks, read around each sweep.
    let pid = _kid.0.id();
    let t0 = pid_ticks(pid);
    assert!(proc_c.sweep().unwrap().is_none());
    assert!(sysinfo_c.sweep().unwrap().is_none());
    let t1 = pid_ticks(pid);
    // Behaviour, not synchronisation: the interval both collectors measure over.
    std::thread::sleep(Duration::from_secs(1));
    let t2 = pid_ticks(pid);
    let a = proc_c.sweep().unwrap().unwrap();
    let b = sysinfo_c.sweep().unwrap().unwrap();
    let t3 = pid_ticks(pid);

    for (which, sweep) in [("proc", &a), ("sysinfo", &b)] {
        let s = group(sweep, &name);
        assert_eq!(s.count, 1, "{which}");
        // The collector's ticks lie between what the kernel counted strictly inside the two
        // sweeps and what it counted around them, give or take rounding and the few ms by which
        // a collector's time base and its reads of the ticks can be apart.
        let ticks = s.cores * sweep.elapsed_ms as f64 / 1000.0 * sys::clk_tck() as f64;
        let (least, most) = ((t2 - t1) as f64 * 0.97 - 2.0, (t3 - t0) as f64 * 1.03 + 2.0);
        assert!(
            (least..=most).contains(&ticks),
            "{which}: {ticks:.1} ticks (cores {}), the kernel counted {least}..={most}",
            s.cores
        );
        // Both are sent at the agent's precision (cpu to 0.001 %, cores to 0.00001 core):
        // they agree to within half a step of each.
        let tolerance = 0.5 / PERCENT_SCALE + 100.0 * 0.5 / CORES_SCALE / ncpu + 1e-9;
        assert!(
            (s.cpu - 100.0 * s.cores / ncpu).abs() <= tolerance,
            "{which}: cpu {} and cores {} disagree",
            s.cpu,
            s.cores
        );
        assert_eq!(s.cpu, round_percent(s.cpu), "{which}: cpu is at the agent's precision");
        assert_eq!(s.cores, round_cores(s.cores), "{which}: cores is at the agent's precision");
        // The host is at least as busy as our spinner; what no process explains is the rest.
        let h = &sweep.host_total;
        assert!(h.cpu >= s.cpu * 0.9, "{which}: host cpu {} below the spinner's {}", h.cpu, s.cpu);
        let unattributed = h.unattributed_cpu.expect("unattributed cpu is reported");
        assert!((0.0..=h.cpu).contains(&unattributed), "{which}: unattributed {unattributed}");
    }
    // At least the second slept between the sweeps; how much more depends on the machine.
    assert!(a.elapsed_ms >= 1000, "elapsed {}", a.elapsed_ms);
}

#[test]
fn allocating_256_mib_reads_its_rss_and_mem_percent() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("alloc");
    let perl = copy_program(dir.path(), "perl", &name);
    let mut cmd = Command::new(&perl);
    // The size is an argument so perl builds the string at run time, once (a constant would be
    // folded at compile time and copied, doubling the RSS).
    cmd.args(["-e", "$| = 1; my $x = 'a' x $ARGV[0]; print qq(ready\\n); sleep 60;"])
        .arg((256u64 << 20).to_string())
        .stdout(Stdio::piped());
    let mut kid = spawn(&mut cmd);
    let mut line = String::new();
    BufReader::new(kid.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let sweep = one_sweep(&mut *proc_collector(false), Duration::from_millis(200));
    let s = group(&sweep, &name);
    let mib256 = 256.0 * 1024.0 * 1024.0;
    assert!(s.rss as f64 >= mib256, "rss {} < 256 MiB", s.rss);
    let mem_total = meminfo_total();
    let expected = 100.0 * mib256 / mem_total;
    assert!(within(s.mem, expected, 0.10), "mem {} not ≈ {expected}", s.mem);
    // mem is rss over MemTotal, sent to the agent's precision (thousandths of a percent).
    assert_eq!(s.mem, round_percent(100.0 * s.rss as f64 / mem_total));
}

fn meminfo_total() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024.0
}

#[test]
fn four_copies_form_one_group_with_summed_values() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("four");
    let prog = copy_program(dir.path(), "sleep", &name);
    let kids: Vec<Kid> = (0..4).map(|_| spawn(Command::new(&prog).arg("60"))).collect();
    for k in &kids {
        wait_exec(k.0.id(), &name);
    }
    let sweep = one_sweep(&mut *proc_collector(true), Duration::from_millis(200));
    let s = group(&sweep, &name);
    assert_eq!(s.count, 4);
    let mine: Vec<_> = sweep.processes.iter().filter(|p| p.name == name).collect();
    let mut pids: Vec<u32> = mine.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    let mut want: Vec<u32> = kids.iter().map(|k| k.0.id()).collect();
    want.sort_unstable();
    assert_eq!(pids, want);
    assert_eq!(s.rss, mine.iter().map(|p| p.rss).sum::<u64>());
    assert!(s.rss > 0);
    // The group's figures are the sums, sent at the agent's precision.
    assert_eq!(s.cores, round_cores(mine.iter().map(|p| p.cores).sum::<f64>()));
    let mem: f64 = mine.iter().map(|p| p.mem).sum();
    assert!((s.mem - mem).abs() <= 0.5 / PERCENT_SCALE + 1e-9, "mem {} vs sum {mem}", s.mem);
}

#[test]
fn names_longer_than_15_bytes_are_kept_whole() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    // Found through argv[0].
    let by_argv = unique_name("long-name-by-argv0");
    let prog = copy_program(dir.path(), "sleep", &by_argv);
    let k1 = spawn(Command::new(&prog).arg("60"));
    // argv[0] replaced by something else: found through /proc/PID/exe.
    let by_exe = unique_name("long-name-by-exe");
    let prog2 = copy_program(dir.path(), "sleep", &by_exe);
    let k2 =
        spawn(std::os::unix::process::CommandExt::arg0(&mut Command::new(&prog2), "x").arg("60"));
    wait_exec(k1.0.id(), &by_argv);
    wait_exec(k2.0.id(), &by_exe);
    for kind in [CollectorKind::Proc, CollectorKind::Sysinfo] {
        let mut c = new_collector(kind, CollectorOptions::default()).unwrap();
        let sweep = one_sweep(&mut *c, Duration::from_millis(100));
        assert!(by_argv.len() > 15 && by_exe.len() > 15);
        assert_eq!(group(&sweep, &by_argv).count, 1, "{kind:?}");
        assert_eq!(group(&sweep, &by_exe).count, 1, "{kind:?}");
        let truncated: Vec<_> = sweep
            .samples
            .iter()
            .filter(|s| s.process == by_argv[..15] || s.process == by_exe[..15])
            .collect();
        assert!(truncated.is_empty(), "{kind:?}: truncated names remain: {truncated:?}");
    }
}

#[test]
fn processes_exiting_mid_sweep_cause_no_error() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    // A shell that forks short-lived children as fast as it can, so processes vanish while
    // the collector walks /proc.
    let name = unique_name("churn");
    let sh = copy_program(dir.path(), "sh", &name);
    let _churn = spawn(Command::new(&sh).args(["-c", "while :; do /bin/true; /bin/true; done"]));
    let victim_name = unique_name("victim");
    let prog = copy_program(dir.path(), "sleep", &victim_name);
    let mut victim = spawn(Command::new(&prog).arg("60"));
    wait_exec(victim.0.id(), &victim_name);

    for kind in [CollectorKind::Proc, CollectorKind::Sysinfo] {
        let mut c = new_collector(kind, CollectorOptions::default()).unwrap();
        assert!(c.sweep().unwrap().is_none());
        for _ in 0..20 {
            c.sweep().unwrap_or_else(|e| panic!("{kind:?}: {e}")).expect("measures");
        }
    }
    // A process seen at the previous sweep and gone at this one just drops out.
    let mut c = proc_collector(false);
    assert!(c.sweep().unwrap().is_none());
    let _ = victim.0.kill();
    let _ = victim.0.wait();
    let sweep = c.sweep().unwrap().unwrap();
    assert!(sweep.samples.iter().all(|s| s.process != victim_name));
}

#[test]
fn a_new_process_counts_all_its_ticks() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    for kind in [CollectorKind::Proc, CollectorKind::Sysinfo] {
        let mut c = new_collector(kind, CollectorOptions::default()).unwrap();
        assert!(c.sweep().unwrap().is_none());
        // Started after the priming sweep: all its CPU lies inside the interval.
        let (kid, name) = spawn_spinner(dir.path());
        // Behaviour, not synchronisation: the spinner burns CPU for the interval measured.
        std::thread::sleep(Duration::from_millis(700));
        let sweep = c.sweep().unwrap().unwrap();
        let s = group(&sweep, &name);
        let ticks_now = pid_ticks(kid.0.id()) as f64;
        let ticks_seen = s.cores * sweep.elapsed_ms as f64 / 1000.0 * sys::clk_tck() as f64;
        // Every tick it had at the sweep is counted (allowing for the ticks since, and rounding).
        assert!(ticks_seen > 0.0, "{kind:?}");
        assert!(ticks_seen <= ticks_now + 1.0, "{kind:?}: {ticks_seen} > {ticks_now}");
        let slack = 0.15 * sys::clk_tck() as f64;
        assert!(ticks_seen >= ticks_now - slack, "{kind:?}: {ticks_seen} ≪ {ticks_now}");
    }
}

#[test]
fn kernel_threads_only_on_request() {
    let _g = serial();
    let kthreadd = |sweep: &Sweep| sweep.samples.iter().any(|s| s.process == "kthreadd");
    let has_kthreadd =
        std::fs::read_to_string("/proc/2/stat").is_ok_and(|s| s.contains("(kthreadd)"));
    let without = one_sweep(&mut *proc_collector(false), Duration::from_millis(50));
    assert!(!kthreadd(&without));
    let mut c = new_collector(
        CollectorKind::Proc,
        CollectorOptions { include_kernel_threads: true, per_pid: false, ..Default::default() },
    )
    .unwrap();
    let with = one_sweep(&mut *c, Duration::from_millis(50));
    // In a container whose PID namespace hides the kernel's threads there is nothing to see.
    assert_eq!(kthreadd(&with), has_kthreadd);
}

fn procwatch() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_procwatch"));
    cmd.env_remove("PROCWATCH_CONFIG");
    cmd
}

#[test]
fn agent_once_prints_a_batch_sorted_by_cpu() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_kid, name) = spawn_spinner(dir.path());
    let out = procwatch()
        .args(["agent", "--once", "--interval", "1s", "--format", "json", "--host", "test-host"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let batch: Batch = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(batch.host, "test-host");
    assert!(batch.agent.starts_with("procwatch/"));
    assert_eq!(batch.interval_ms, 1000);
    assert_eq!(batch.host_totals.len(), 1);
    let ts = batch.host_totals[0].ts;
    assert!(batch.samples.iter().all(|s| s.ts == ts));
    assert!(batch.samples.windows(2).all(|w| w[0].cores >= w[1].cores), "not sorted by cpu");
    let s = batch.samples.iter().find(|s| s.process == name).expect("spinner present");
    // A single-threaded spinner: busy, and at most one core (how much of one depends on what
    // else the machine runs; busy_loop_reads_one_core_on_both_collectors checks the value).
    assert!(s.cores > 0.0 && s.cores <= 1.05, "cores {}", s.cores);

    let table = procwatch()
        .args(["agent", "--once", "--interval", "200ms", "--collector", "sysinfo"])
        .output()
        .unwrap();
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.lines().nth(1).unwrap().contains("PROCESS"), "{text}");
    assert!(text.contains(&name), "{text}");
}

#[test]
fn agent_runs_on_a_fixed_cadence_writing_json_lines() {
    let _g = serial();
    let mut kid = Kid(procwatch()
        .args(["agent", "--interval", "300ms", "--host", "cadence"])
        .env("PROCWATCH_FORMAT", "json")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    let mut lines = BufReader::new(kid.0.stdout.take().unwrap()).lines();
    let batches: Vec<Batch> =
        (0..4).map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let ts: Vec<i64> = batches.iter().map(|b| b.host_totals[0].ts).collect();
    // Deadlines are previous + interval: over three intervals the timestamps advance by 900 ms
    // give or take scheduling jitter, not by 900 ms plus three sweeps' work.
    let span = ts[3] - ts[0];
    assert!((800..=1100).contains(&span), "span {span} ms for 3 × 300 ms");
    assert!(batches.iter().all(|b| b.host == "cadence" && !b.samples.is_empty()));
}

#[test]
fn agent_flags_come_from_the_environment_too() {
    let _g = serial();
    let out = procwatch()
        .args(["agent"])
        .env("PROCWATCH_ONCE", "true")
        .env("PROCWATCH_INTERVAL", "200ms")
        .env("PROCWATCH_FORMAT", "json")
        .env("PROCWATCH_HOST", "from-env")
        .env("PROCWATCH_COLLECTOR", "proc")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let batch: Batch = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((batch.host.as_str(), batch.interval_ms), ("from-env", 200));
    assert!(!batch.samples.is_empty());
}

#[test]
fn agent_reports_a_missing_procfs_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-proc-here");
    let out = procwatch()
        .args(["agent", "--once", "--interval", "10ms", "--proc-root"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-proc-here/stat"), "{err}");
}
