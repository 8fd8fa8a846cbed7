//! Replays every fuzz target's body over its committed seeds (`seeds/<target>/`) and any local
//! corpus (`corpus/<target>/`): `cargo test --manifest-path fuzz/Cargo.toml`, no cargo-fuzz
//! needed. (An integration test, so the binary's `config.rs`, included by path, is built
//! without its own unit tests, which need the binary's `Cli`.)

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["seeds", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for e in entries {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            check(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no seeds for {target}");
    eprintln!("{target}: {n} inputs replayed");
}

#[test]
fn batch_decoder() {
    replay("batch_decoder", procwatch_fuzz::batch_decoder::check);
}

#[test]
fn legacy_decoder() {
    replay("legacy_decoder", procwatch_fuzz::legacy_decoder::check);
}

#[test]
fn proc_parsers() {
    replay("proc_parsers", procwatch_fuzz::proc_parsers::check);
}

#[test]
fn line_protocol() {
    replay("line_protocol", procwatch_fuzz::line_protocol::check);
}

#[test]
fn config_loader() {
    replay("config_loader", procwatch_fuzz::config_loader::check);
}
