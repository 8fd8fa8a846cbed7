//! Any body: `decode_batch` returns a valid batch or a rejection, never panics; an accepted
//! batch passes `validate_batch` again and survives a JSON round trip unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| procwatch_fuzz::batch_decoder::check(data));
