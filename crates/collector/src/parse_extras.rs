//! Pure parsers for the opt-in extra metrics (issue 19): `/proc/PID/io`, `/proc/PID/status`,
//! `/proc/PID/limits`, `/proc/PID/cgroup` and `/etc/passwd`. No I/O: every function takes the
//! file's text and is tested on captured text. Hostile input (huge lines, odd names) is capped.

use std::collections::HashMap;

/// Longest unit name or container id kept, bytes (the server's cap too).
pub const MAX_UNIT: usize = procwatch_model::extras::MAX_UNIT_BYTES;
/// Longest user name kept, bytes.
pub const MAX_OWNER: usize = procwatch_model::extras::MAX_OWNER_BYTES;
/// At most this many users are read from `/etc/passwd`.
pub const MAX_USERS: usize = 100_000;

fn field_u64(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok())
}

/// `read_bytes` and `write_bytes` of `/proc/PID/io` (bytes that reached the storage layer).
pub fn parse_io(text: &str) -> Option<(u64, u64)> {
    Some((field_u64(text, "read_bytes:")?, field_u64(text, "write_bytes:")?))
}

/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of `/proc/PID/status`.
pub fn parse_ctxsw(text: &str) -> Option<(u64, u64)> {
    // They are the last lines of the file: search from the end.
    let (mut vol, mut invol) = (None, None);
    for l in text.lines().rev() {
        if let Some(v) = l.strip_prefix("nonvoluntary_ctxt_switches:") {
            invol = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
            vol = v.trim().parse().ok();
        }
        if vol.is_some() && invol.is_some() {
            break;
        }
    }
    Some((vol?, invol?))
}

/// The third field of `/proc/PID/schedstat`: how many times the task was switched in.
pub fn parse_schedstat_pcount(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(2)?.parse().ok()
}

/// The soft limit of "Max open files" in `/proc/PID/limits`; `None` when unlimited or absent.
pub fn parse_nofile_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_ascii_whitespace().next()?.parse().ok()
}

/// The unit of a process from `/proc/PID/cgroup`: the cgroup v2 line (`0::/path`), else the
/// systemd v1 hierarchy (`N:name=systemd:/path`). From the path, innermost first:
/// - `…/docker-<id>.scope`, `…/cri-containerd-<id>.scope`, `…/libpod-<id>.scope`, or a
///   component of 64 hex digits → the container id, its first 12 hex digits (docker's short id);
/// - a component ending in `.service` or `.scope` (`run-r1234.scope`, `session-3.scope`) →
///   that unit;
/// - otherwise the path itself (`/` for the root cgroup, or a cgroup a test created).
///
/// Cut at [`MAX_UNIT`] bytes; control characters become `?`.
pub fn parse_cgroup_unit(text: &str) -> Option<String> {
    let mut v1 = None;
    let mut v2 = None;
    for line in text.lines().take(64) {
        if let Some(p) = line.strip_prefix("0::") {
            v2 = Some(p);
            break;
        }
        let mut parts = line.splitn(3, ':');
        if let (Some(_), Some("name=systemd"), Some(p)) = (parts.next(), parts.next(), parts.next())
        {
            v1 = Some(p);
        }
    }
    let path = v2.or(v1)?.trim();
    if path.is_empty() {
        return None;
    }
    let components = path.split('/').filter(|c| !c.is_empty());
    let mut unit = None;
    for c in components.rev() {
        if let Some(id) = container_id(c) {
            return Some(clean(id));
        }
        if unit.is_none() && (c.ends_with(".service") || c.ends_with(".scope")) {
            unit = Some(c);
        }
    }
    Some(clean(unit.unwrap_or(path)))
}

fn container_id(c: &str) -> Option<&str> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let inner = c.strip_suffix(".scope").unwrap_or(c);
    let id = ["docker-", "cri-containerd-", "crio-", "libpod-"]
        .iter()
        .find_map(|p| inner.strip_prefix(p))
        .unwrap_or(inner);
    is_id(id).then(|| &id[..12])
}

fn clean(s: &str) -> String {
    crate::parse::clean_capped(s, MAX_UNIT)
}

/// uid → user name from the text of `/etc/passwd` (`name:x:uid:…`). Names are cut at
/// [`MAX_OWNER`] bytes, at most [`MAX_USERS`] entries; the first entry of a uid wins.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    for line in text.lines() {
        if users.len() >= MAX_USERS {
            break;
        }
        let mut f = line.splitn(4, ':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else { continue };
        let Ok(uid) = uid.parse::<u32>() else { continue };
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        users.entry(uid).or_insert_with(|| crate::parse::clean_capped(name, MAX_OWNER));
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    const IO: &str = "rchar: 323934931\nwchar: 323929600\nsyscr: 632687\nsyscw: 632675\nread_bytes: 4096\nwrite_bytes: 323932160\ncancelled_write_bytes: 0\n";

    #[test]
    fn io_bytes() {
        assert_eq!(parse_io(IO), Some((4096, 323932160)));
        assert_eq!(parse_io("rchar: 1\n"), None);
        assert_eq!(parse_io("read_bytes: x\nwrite_bytes: 1\n"), None);
    }

    #[test]
    fn status_context_switches() {
        let status = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4711\nThreads:\t1\nCpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t2\n";
        assert_eq!(parse_ctxsw(status), Some((150, 2)));
        assert_eq!(parse_ctxsw("Name:\tx\n"), None);
    }

    #[test]
    fn schedstat_switch_ins() {
        assert_eq!(parse_schedstat_pcount("98968630 9830391 636\n"), Some(636));
        assert_eq!(parse_schedstat_pcount("1 2\n"), None);
    }

    #[test]
    fn nofile_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            1024                 524288               files     \nMax locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_nofile_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile_limit(unlimited), None);
        assert_eq!(parse_nofile_limit(""), None);
    }

    #[test]
    fn cgroup_units() {
        let svc = "0::/system.slice/nginx.service\n";
        assert_eq!(parse_cgroup_unit(svc).as_deref(), Some("nginx.service"));
        let id = "a".repeat(64);
        let docker = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(parse_cgroup_unit(&docker).as_deref(), Some("aaaaaaaaaaaa"));
        let k8s = format!("0::/kubepods/burstable/pod1234/{}\n", "0123456789abcdef".repeat(4));
        assert_eq!(parse_cgroup_unit(&k8s).as_deref(), Some("0123456789ab"));
        let transient = "0::/system.slice/run-r3f2a1b.scope\n";
        assert_eq!(parse_cgroup_unit(transient).as_deref(), Some("run-r3f2a1b.scope"));
        let session = "0::/user.slice/user-1000.slice/session-3.scope\n";
        assert_eq!(parse_cgroup_unit(session).as_deref(), Some("session-3.scope"));
        // Service inside a user manager: the innermost unit.
        let user = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n";
        assert_eq!(parse_cgroup_unit(user).as_deref(), Some("foo.service"));
        // A cgroup a test created: its path.
        assert_eq!(
            parse_cgroup_unit("0::/procwatch-test-1\n").as_deref(),
            Some("/procwatch-test-1")
        );
        assert_eq!(parse_cgroup_unit("0::/\n").as_deref(), Some("/"));
        // Hybrid (v1 + v2) host: v2 line wins; a v1-only host: the systemd hierarchy.
        let hybrid = "12:cpu,cpuacct:/x\n1:name=systemd:/system.slice/cron.service\n0::/system.slice/cron.service\n";
        assert_eq!(parse_cgroup_unit(hybrid).as_deref(), Some("cron.service"));
        let v1 = "3:memory:/a\n1:name=systemd:/system.slice/ssh.service\n";
        assert_eq!(parse_cgroup_unit(v1).as_deref(), Some("ssh.service"));
        assert_eq!(parse_cgroup_unit("3:memory:/a\n"), None);
        assert_eq!(parse_cgroup_unit(""), None);
    }

    #[test]
    fn hostile_cgroup_paths_are_capped() {
        let huge = format!("0::/{}\n", "x".repeat(100_000));
        let u = parse_cgroup_unit(&huge).unwrap();
        assert!(u.len() <= MAX_UNIT);
        let odd = "0::/system.slice/we\u{1b}ird\u{7}.service\n";
        assert_eq!(parse_cgroup_unit(odd).as_deref(), Some("we?ird?.service"));
        let long_unit = format!("0::/{}.service\n", "é".repeat(300));
        let u = parse_cgroup_unit(&long_unit).unwrap();
        assert!(u.len() <= MAX_UNIT && u.chars().all(|c| c == 'é'), "{u}");
    }

    #[test]
    fn passwd_users() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment:x:5:\nnobody:x:65534:65534::/:/usr/sbin/nologin\nbad line\nroot2:x:0:0::/:/bin/sh\nweird:x:notanumber:0::/:\n";
        let u = parse_passwd(text);
        assert_eq!(u.get(&0).map(String::as_str), Some("root"));
        assert_eq!(u.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(u.len(), 2);
        let long = format!("{}:x:7:7::/:\n", "n".repeat(1000));
        assert_eq!(parse_passwd(&long)[&7].len(), MAX_OWNER);
    }
}
