//! Any text as a `--config` TOML file: `config::exports_for` (the binary's own module, included
//! by path) returns the env pairs or an error naming the file, never panics; every exported
//! name is `PROCWATCH_` + an upper-case flag name, and every value passed the flag's parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| procwatch_fuzz::config_loader::check(data));
