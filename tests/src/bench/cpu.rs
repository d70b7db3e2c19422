//! CPU time of processes and threads, read from `/proc`.
//!
//! Why `/proc/PID/stat` (fields 14 `utime` and 15 `stime`, in clock ticks) rather than
//! `/proc/PID/task/*/schedstat` (nanoseconds): the process line sums every thread of the
//! process *including the threads that exited* during the measured period (tokio's
//! blocking pool comes and goes), which a sum over the live threads' `schedstat` misses.
//! Its precision, one tick (10 ms at the usual 100 ticks a second), is below 0.5 % of
//! what a broker spends in a 2 s short phase (≈ 2 s of CPU), and below 0.1 % in a 10 s
//! phase. The per-thread split uses the same fields of `/proc/PID/task/TID/stat`, so the
//! parts and the whole share one unit.
//!
//! Threads that ran inside this benchmark's own process (the signing threads) are
//! measured with `getrusage(RUSAGE_THREAD)` instead: microseconds, one thread exactly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `AT_CLKTCK` in the auxiliary vector (Linux `include/uapi/linux/auxvec.h`): the kernel's
/// `USER_HZ`, the unit of `/proc/PID/stat` times. glibc's `sysconf(_SC_CLK_TCK)` returns
/// this same entry.
const AT_CLKTCK: u64 = 17;
/// `AT_NULL`, the auxiliary vector's terminator (same header).
const AT_NULL: u64 = 0;
/// `USER_HZ` on every Linux architecture this project builds for (x86-64, aarch64), used
/// when `/proc/self/auxv` cannot be read.
const DEFAULT_USER_HZ: u64 = 100;

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_second() -> u64 {
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|b| parse_auxv_clktck(&b))
        .filter(|hz| *hz > 0)
        .unwrap_or(DEFAULT_USER_HZ)
}

/// `AT_CLKTCK` out of a native-endian auxiliary vector of 64-bit (type, value) pairs.
pub fn parse_auxv_clktck(auxv: &[u8]) -> Option<u64> {
    for pair in auxv.chunks_exact(16) {
        let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        match key {
            AT_CLKTCK => return Some(value),
            AT_NULL => return None,
            _ => {}
        }
    }
    None
}

/// Name and `utime + stime` (ticks) out of a `/proc/PID/stat` or `/proc/PID/task/TID/stat`
/// line. The name sits in parentheses and may itself hold spaces or `)`, so the fields
/// are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<(String, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    // After the name: field 3 (state) is index 0, so utime (field 14) is index 11 and
    // stime (field 15) index 12 (proc(5)).
    let mut rest = line.get(close + 1..)?.split_whitespace();
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU ticks of one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTicks {
    /// The thread's name (`comm`, at most 15 bytes).
    pub comm: String,
    /// `utime + stime`.
    pub ticks: u64,
}

/// CPU ticks of one process and of each of its live threads, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct ProcTicks {
    /// `utime + stime` of the whole process, exited threads included.
    pub ticks: u64,
    /// Live threads by id.
    pub threads: BTreeMap<u32, ThreadTicks>,
}

/// Reads `/proc/PID/stat` and every `/proc/PID/task/TID/stat`; `None` when the process is
/// gone or `/proc` is not readable.
pub fn proc_ticks(pid: u32) -> Option<ProcTicks> {
    let (_, ticks) = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // A thread may exit between the listing and the read: skip it.
            if let Some((comm, t)) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                threads.insert(tid, ThreadTicks { comm, ticks: t });
            }
        }
    }
    Some(ProcTicks { ticks, threads })
}

/// CPU of the processes under test at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was read.
    pub at: Instant,
    /// One entry per process asked for, in the order asked (`None`: not known or
    /// unreadable).
    pub procs: Vec<Option<ProcTicks>>,
}

impl Snapshot {
    /// Reads the processes `pids` now.
    pub fn take(pids: &[Option<u32>]) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            procs: pids.iter().map(|p| p.and_then(proc_ticks)).collect(),
        }
    }
}

/// CPU one process spent between two snapshots.
#[derive(Debug, Clone, Default)]
pub struct ProcCpu {
    /// The whole process.
    pub total: Duration,
    /// By thread name, over the threads alive at the second snapshot (threads born in
    /// between count whole). Threads that exited in between are only in `total`.
    pub by_comm: BTreeMap<String, Duration>,
}

impl ProcCpu {
    /// The part of `total` not attributed to a named live thread (exited threads, and
    /// tick rounding between the process line and its threads).
    pub fn unattributed(&self) -> Duration {
        self.total
            .saturating_sub(self.by_comm.values().copied().sum::<Duration>())
    }
}

/// The CPU spent between `before` and `after`, `hz` ticks a second.
pub fn proc_delta(before: &ProcTicks, after: &ProcTicks, hz: u64) -> ProcCpu {
    let to_dur = |ticks: u64| Duration::from_secs_f64(ticks as f64 / hz.max(1) as f64);
    let mut by_comm: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, t) in &after.threads {
        let start = before.threads.get(tid).map_or(0, |b| b.ticks);
        *by_comm.entry(t.comm.clone()).or_default() += t.ticks.saturating_sub(start);
    }
    ProcCpu {
        total: to_dur(after.ticks.saturating_sub(before.ticks)),
        by_comm: by_comm.into_iter().map(|(k, v)| (k, to_dur(v))).collect(),
    }
}

/// Per-process CPU between two snapshots of the same pids (`None` where either side was
/// unreadable).
pub fn window(before: &Snapshot, after: &Snapshot, hz: u64) -> Vec<Option<ProcCpu>> {
    before
        .procs
        .iter()
        .zip(&after.procs)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => Some(proc_delta(b, a, hz)),
            _ => None,
        })
        .collect()
}

/// CPU (user + system) of the calling thread so far, from `getrusage(RUSAGE_THREAD)`.
pub fn this_thread_cpu() -> Option<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD).ok()?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Some(tv(u.user_time()) + tv(u.system_time()))
}

/// Microseconds per unit of work (`None` when there was none).
pub fn us_per(cpu: Duration, n: u64) -> Option<f64> {
    (n > 0).then(|| cpu.as_secs_f64() * 1e6 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_parsed() {
        let line = "1234 (tokio-runtime-w) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 4 0 100 1000 50 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("tokio-runtime-w".into(), 325)));
        // A name holding spaces and parentheses.
        let odd = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(odd), Some(("a) b (c)".into(), 7)));
        assert_eq!(parse_stat("7 (x) R 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn auxv_clock_tick_found() {
        let mut v = Vec::new();
        for (k, val) in [(6u64, 4096u64), (AT_CLKTCK, 100), (AT_NULL, 0)] {
            v.extend_from_slice(&k.to_ne_bytes());
            v.extend_from_slice(&val.to_ne_bytes());
        }
        assert_eq!(parse_auxv_clktck(&v), Some(100));
        assert_eq!(parse_auxv_clktck(&v[32..]), None);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn own_process_is_readable_and_deltas_add_up() {
        let hz = clock_ticks_per_second();
        let before = proc_ticks(std::process::id()).unwrap();
        assert!(!before.threads.is_empty());
        let mut after = before.clone();
        after.ticks += 2 * hz;
        if let Some((_, t)) = after.threads.iter_mut().next() {
            t.ticks += hz;
        }
        let d = proc_delta(&before, &after, hz);
        assert_eq!(d.total, Duration::from_secs(2));
        assert_eq!(d.unattributed(), Duration::from_secs(1));
        assert_eq!(us_per(Duration::from_millis(1), 10), Some(100.0));
        assert_eq!(us_per(Duration::from_millis(1), 0), None);
    }

    #[test]
    fn thread_cpu_grows_with_work() {
        let a = this_thread_cpu().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = this_thread_cpu().unwrap();
        assert!(b >= a);
    }
}
