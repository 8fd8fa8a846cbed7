//! The cost floor of the benchmark: a reader that reads `/proc/PID/stat` and
//! `/proc/PID/statm` for every PID and computes nothing. A collector that needs both files
//! cannot be cheaper than this; procwatch reads one file per process to get under it.

use crate::linux::{entry_pid, pid_path, read_proc_file};

/// Reuses its buffers between sweeps, like the collector does.
#[derive(Debug)]
pub struct FloorReader {
    files: &'static [&'static str],
    buf: Vec<u8>,
    path: String,
}

impl Default for FloorReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FloorReader {
    /// The floor of the issue: `stat` and `statm`.
    pub fn new() -> Self {
        Self::with_files(&["stat", "statm"])
    }

    /// A reader of other files per PID (e.g. `stat` alone, for comparison).
    pub fn with_files(files: &'static [&'static str]) -> Self {
        FloorReader { files, buf: vec![0; 4096], path: String::with_capacity(64) }
    }

    /// Opens, reads and closes each file of every PID; returns how many PIDs and bytes were
    /// read.
    pub fn sweep(&mut self) -> std::io::Result<(usize, usize)> {
        let (mut pids, mut bytes) = (0, 0);
        for entry in std::fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry_pid(&entry) else { continue };
            pids += 1;
            for file in self.files {
                pid_path(&mut self.path, "/proc", pid, file);
                bytes += read_proc_file(&self.path, &mut self.buf).unwrap_or(0);
            }
        }
        Ok((pids, bytes))
    }
}
