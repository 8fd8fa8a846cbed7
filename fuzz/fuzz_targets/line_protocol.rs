//! A valid sample with any process name and host: the line-protocol writer emits exactly one
//! line, and the tag values read back (split on unescaped separators, unescaped, decoded) are
//! the host and process that went in.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| procwatch_fuzz::line_protocol::check(data));
