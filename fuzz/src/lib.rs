//! The bodies of the fuzz targets, as plain functions: `fuzz_targets/*.rs` call them under
//! libFuzzer, and `tests/replay.rs` runs them over the committed seeds (`seeds/<target>/`) and
//! any local corpus (`corpus/<target>/`), so `cargo test --manifest-path fuzz/Cargo.toml` is a
//! quick replay without cargo-fuzz.

/// The binary's config loader (`--config FILE` → `PROCWATCH_*`), included by path: it is a
/// module of the `procwatch` binary, not of a library.
#[allow(dead_code)]
#[path = "../../crates/procwatch/src/config.rs"]
mod config;

pub mod batch_decoder {
    //! Any body: `decode_batch` returns a valid batch or a rejection, never panics; an accepted
    //! batch passes `validate_batch` again and survives a JSON round trip unchanged.
    use procwatch_model::validate::{decode_batch, validate_batch, Limits};

    pub fn check(data: &[u8]) {
        let limits = Limits::new(1_764_070_000_000, 48 * 3600 * 1000);
        if let Ok(batch) = decode_batch(data, &limits) {
            assert!(validate_batch(&batch, &limits).is_ok());
            let again = serde_json::to_vec(&batch).unwrap();
            let back = decode_batch(&again, &limits).expect("a re-encoded valid batch decodes");
            assert_eq!(back, batch);
        }
    }
}

pub mod legacy_decoder {
    //! Any body: `decode_legacy` returns a valid batch or a rejection, never panics; an accepted
    //! batch is valid by the v1 rules.
    use procwatch_model::validate::{decode_legacy, validate_batch, Limits};

    pub fn check(data: &[u8]) {
        let limits = Limits::new(1_764_070_000_000, 48 * 3600 * 1000);
        if let Ok(batch) = decode_legacy(data, &limits) {
            assert!(validate_batch(&batch, &limits).is_ok());
        }
    }
}

pub mod proc_parsers {
    //! Any text as /proc/PID/stat, /proc/stat and /proc/meminfo, any bytes as a cmdline: the
    //! parsers return None or a value, never panic; names are sanitized to no control characters.
    use procwatch_collector::parse;

    pub fn check(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let _ = parse::parse_pid_stat(&text);
        let _ = parse::parse_proc_stat_cpu(&text);
        let _ = parse::parse_meminfo(&text);
        if let Some(base) = parse::argv0_basename(data) {
            let _ = parse::resolve_name(&text, &[Some(base)]);
        }
        let clean = parse::sanitize_name(&text);
        assert!(!clean.chars().any(char::is_control));
    }
}

pub mod line_protocol {
    //! A valid sample with any process name and host: the line-protocol writer emits exactly one
    //! line, and the tag values read back (split on unescaped separators, unescaped, decoded) are
    //! the host and process that went in.
    use procwatch_model::validate::{host_problem, process_problem};
    use procwatch_model::Sample;
    use procwatch_store_influx::line;

    /// Splits on `sep` where it is not escaped by a backslash.
    fn split_unescaped(s: &str, sep: char) -> Vec<String> {
        let mut parts = vec![String::new()];
        let mut esc = false;
        for c in s.chars() {
            if esc {
                parts.last_mut().unwrap().push(c);
                esc = false;
            } else if c == '\\' {
                parts.last_mut().unwrap().push(c);
                esc = true;
            } else if c == sep {
                parts.push(String::new());
            } else {
                parts.last_mut().unwrap().push(c);
            }
        }
        parts
    }

    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            if c == '\\' && matches!(it.peek(), Some(',' | '=' | ' ')) {
                out.push(it.next().unwrap());
            } else {
                out.push(c);
            }
        }
        out
    }

    pub fn check(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let (host, process) = text.split_once('\u{0}').unwrap_or(("h", &text));
        if host_problem(host).is_some() || process_problem(process).is_some() {
            return;
        }
        let s = Sample {
            ts: 1,
            process: process.into(),
            cpu: 1.0,
            cores: 0.02,
            mem: 2.0,
            rss: 3,
            count: 1,
            extras: None,
        };
        let mut out = String::new();
        line::sample_point(&mut out, host, &s);
        assert!(out.ends_with('\n'));
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        let body = out.trim_end_matches('\n');
        let sections = split_unescaped(body, ' ');
        assert_eq!(sections.len(), 3, "{out:?}");
        let tags: Vec<(String, String)> = split_unescaped(&sections[0], ',')[1..]
            .iter()
            .map(|kv| {
                let p = split_unescaped(kv, '=');
                assert_eq!(p.len(), 2, "{out:?}");
                (unescape(&p[0]), line::decode_tag_value(&unescape(&p[1])).into_owned())
            })
            .collect();
        for (k, v) in &tags {
            match k.as_str() {
                "host" => assert_eq!(v, host),
                "process" => assert_eq!(v, process),
                _ => {}
            }
        }
    }
}

pub mod config_loader {
    //! Any text as a `--config` TOML file: `config::exports_for` (the binary's own module, included
    //! by path) returns the env pairs or an error naming the file, never panics; every exported
    //! name is `PROCWATCH_` + an upper-case flag name, and every value passed the flag's parser.
    use std::path::Path;

    use crate::config;

    /// A command tree shaped like procwatch's (a few flags of each kind per subcommand).
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[arg(long, global = true, env = "PROCWATCH_LOG_FORMAT", default_value = "text")]
        log_format: String,
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Debug, clap::Args)]
    struct Common {
        #[arg(long, env = "PROCWATCH_SERVER")]
        server: Option<String>,
        #[arg(long, env = "PROCWATCH_INTERVAL", value_parser = parse_secs)]
        interval: Option<u64>,
        #[arg(long, env = "PROCWATCH_ONCE")]
        once: bool,
        #[arg(long, env = "PROCWATCH_MAX_SAMPLES")]
        max_samples: Option<usize>,
        #[arg(long, env = "PROCWATCH_STORE", value_parser = ["sqlite", "influxdb", "memory"])]
        store: Option<String>,
    }

    fn parse_secs(s: &str) -> Result<u64, String> {
        s.trim_end_matches('s').parse().map_err(|e| format!("{e}"))
    }

    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Agent(Common),
        Server(Common),
        Alarm(Common),
        Up(Common),
        Status(Common),
    }

    pub fn check(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else { return };
        for sub in [None, Some("agent"), Some("server"), Some("up")] {
            match config::exports_for::<Cli>(Path::new("fuzz.toml"), text, sub) {
                Ok(pairs) => {
                    for (name, _) in pairs {
                        assert!(name.starts_with("PROCWATCH_"), "{name}");
                        assert!(!name.contains(['=', '\0']), "{name}");
                    }
                }
                Err(e) => assert!(format!("{e:#}").contains("fuzz.toml"), "{e:#}"),
            }
        }
    }
}
