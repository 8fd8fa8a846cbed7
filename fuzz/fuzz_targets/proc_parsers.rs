//! Any text as /proc/PID/stat, /proc/stat and /proc/meminfo, any bytes as a cmdline: the
//! parsers return None or a value, never panic; names are sanitized to no control characters.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| procwatch_fuzz::proc_parsers::check(data));
