//! The few libc calls the collector needs, each in one small function. This is the only module
//! with `unsafe` code.

use std::time::Duration;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc` CPU times. 100 when
/// unknown.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf takes an integer name and touches no memory of ours.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// Bytes per memory page (`sysconf(_SC_PAGESIZE)`), the unit of `/proc/PID/stat` rss. 4096
/// when unknown.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn page_size() -> u64 {
    // SAFETY: as above.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

/// Online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn online_cpus() -> u64 {
    // SAFETY: as above.
    let v = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if v > 0 {
        v as u64
    } else {
        1
    }
}

/// CPU time (user + system) this process has used so far
/// (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`), for benchmarks.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Raises the soft limit on open files towards the hard limit (at most `want`) and returns the
/// soft limit in force afterwards. The `/proc` collector keeps one descriptor per process.
#[cfg(unix)]
#[allow(unsafe_code, clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn raise_open_files_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    let target = want.min(lim.rlim_max as u64);
    if (lim.rlim_cur as u64) < target {
        let raised = libc::rlimit { rlim_cur: target as libc::rlim_t, rlim_max: lim.rlim_max };
        // SAFETY: `raised` is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return target;
        }
    }
    lim.rlim_cur as u64
}

/// Forks a child that does nothing but wake every `tick` (`nanosleep` in a loop, the first
/// sleep lasting `phase`, so that many tickers need not all wake at once) until it is
/// killed, or until this process dies (`PR_SET_PDEATHSIG`): the benchmark's active processes,
/// each with its own `/proc/PID/schedstat` changing at every wake, no exec and no fork per
/// tick. Returns the child's PID; stop it with [`kill_and_reap`].
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn fork_ticker(tick: Duration, phase: Duration) -> std::io::Result<i32> {
    let spec = |d: Duration| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    let (ts, first) = (spec(tick), spec(phase));
    // SAFETY: after fork the child calls only async-signal-safe system calls (prctl, getppid,
    // nanosleep, _exit) on memory it owns: no lock, no allocation, no return into Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() == 1 {
                libc::_exit(0);
            }
            libc::nanosleep(&first, std::ptr::null_mut());
            loop {
                libc::nanosleep(&ts, std::ptr::null_mut());
            }
        },
        pid => Ok(pid),
    }
}

/// Sends `SIGKILL` to the child `pid` and waits for it (only a child of this process: it is
/// reaped).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn kill_and_reap(pid: i32) {
    let mut status = 0;
    // SAFETY: plain system calls on a PID of our own child; `status` is writable.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

/// CPU time (user + system) used by the children of this process that were waited for
/// (`getrusage(RUSAGE_CHILDREN)`), for benchmarks.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn children_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(not(unix))]
pub fn online_cpus() -> u64 {
    std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1)
}

/// A new generic netlink socket (`socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
/// NETLINK_GENERIC)`), for taskstats.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn netlink_generic_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the new descriptor is owned right below.
    let raw = unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_GENERIC)
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

/// The most datagrams [`netlink_send_many`] and [`recv_many_nowait`] move in one call.
#[cfg(target_os = "linux")]
pub(crate) const MAX_BATCH: usize = 32;

/// Sends each of `msgs` (at most [`MAX_BATCH`]) as one datagram to the kernel (netlink port
/// 0), in one system call (`sendmmsg`); how many were sent.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn netlink_send_many(
    fd: std::os::fd::BorrowedFd,
    msgs: &[&[u8]],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let n = msgs.len().min(MAX_BATCH);
    // SAFETY: an all-zero sockaddr_nl is a valid value of this plain C struct.
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let mut iov: [libc::iovec; MAX_BATCH] = std::array::from_fn(|i| libc::iovec {
        iov_base: msgs.get(i).map_or(std::ptr::null_mut(), |m| m.as_ptr().cast_mut().cast()),
        iov_len: msgs.get(i).map_or(0, |m| m.len()),
    });
    let to_ptr: *mut libc::sockaddr_nl = &mut to;
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = std::array::from_fn(|i| {
        // SAFETY: an all-zero mmsghdr is a valid value of this plain C struct.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_name = to_ptr.cast();
        h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        h.msg_hdr.msg_iov = &mut iov[i];
        h.msg_hdr.msg_iovlen = 1;
        h
    });
    // SAFETY: the first `n` headers point at `to` and at iovecs describing live, readable
    // slices of `msgs`; all outlive the call. The kernel only reads them.
    let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Receives up to `lens.len()` (at most [`MAX_BATCH`]) datagrams without waiting
/// (`recvmmsg`, `MSG_DONTWAIT`), the i-th into `buf[i * slot..(i + 1) * slot]`; sets their
/// lengths in `lens` and returns how many arrived.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn recv_many_nowait(
    fd: std::os::fd::BorrowedFd,
    buf: &mut [u8],
    slot: usize,
    lens: &mut [usize],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let n = lens.len().min(MAX_BATCH).min(buf.len() / slot.max(1));
    let base = buf.as_mut_ptr();
    let mut iov: [libc::iovec; MAX_BATCH] = std::array::from_fn(|i| libc::iovec {
        // SAFETY (of the pointer arithmetic): for i < n, i * slot + slot <= buf.len().
        iov_base: if i < n { base.wrapping_add(i * slot).cast() } else { std::ptr::null_mut() },
        iov_len: if i < n { slot } else { 0 },
    });
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = std::array::from_fn(|i| {
        // SAFETY: an all-zero mmsghdr is a valid value of this plain C struct.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_iov = &mut iov[i];
        h.msg_hdr.msg_iovlen = 1;
        h
    });
    // SAFETY: the first `n` headers point at iovecs describing disjoint, writable slots of
    // `buf`, which outlives the call; no address or control buffer is asked for.
    let got = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for (len, h) in lens.iter_mut().zip(&hdrs).take(got as usize) {
        *len = h.msg_len as usize;
    }
    Ok(got as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysconf_values_are_sane() {
        assert!(clk_tck() >= 1);
        assert!(page_size() >= 1024 && page_size().is_power_of_two());
        assert!(online_cpus() >= 1);
        let a = process_cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time() > a);
    }

    /// The switch-in count (third field) of `/proc/PID/schedstat`.
    #[cfg(target_os = "linux")]
    fn switch_ins(pid: i32) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
        s.split_whitespace().nth(2)?.parse().ok()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_ticker_wakes_until_killed_and_is_reaped() {
        let pid = fork_ticker(Duration::from_millis(5), Duration::from_millis(2)).unwrap();
        let first = switch_ins(pid).expect("the ticker runs");
        // Wait for it to wake again (generous deadline: the machine may be busy).
        let mut woke = false;
        for _ in 0..600 {
            if switch_ins(pid).is_some_and(|n| n > first) {
                woke = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_and_reap(pid);
        assert!(woke, "the ticker's switch-in count did not change within 30 s");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "killed and reaped: no /proc entry"
        );
    }
}
