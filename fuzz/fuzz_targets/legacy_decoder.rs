//! Any body: `decode_legacy` returns a valid batch or a rejection, never panics; an accepted
//! batch is valid by the v1 rules.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| procwatch_fuzz::legacy_decoder::check(data));
