//! The architecture's mechanical invariants (ARCHITECTURE.md, "Where time comes from" and
//! "Architecture invariants"), checked over the source text:
//!
//! - No library reads the wall clock or the monotonic clock (`SystemTime::now`,
//!   `Instant::now`, `.elapsed()`) except the clock's real implementation, `procwatch_model::clock`, and the
//!   collector's sampling (see [`SAMPLING`]). Unit-test modules (from a `#[cfg(test)]` line at
//!   column 0 to the end of the file) and the binary (`crates/procwatch/src`) are exempt.
//! - No HTTP crate (axum, hyper, hyper-util, reqwest, tower, tower-http) among the
//!   `[dependencies]` of a crate other than those in [`HTTP_CRATES`].
//! - No Rust source file under `crates/` longer than [`MAX_LINES`] lines: one idea per file.
//!   Files not split yet would be listed in [`TOO_LONG_FOR_NOW`], each with why (none are).
//! - Every library crate's `lib.rs` denies `missing_docs` (every `pub` item documented), except
//!   those in [`DOCS_PENDING`], each with why.

use std::path::{Path, PathBuf};

/// The only files allowed to read a clock, and why.
const CLOCK_IMPL: &[&str] = &["crates/model/src/clock.rs"];

/// The SAMPLING exemption: the collector turns tick differences into cpu % over the monotonic
/// time between two reads of `/proc`, which must be the real time of the reads themselves (a
/// driven clock would make the kernel's ticks and the elapsed time disagree). Its sample
/// timestamp comes from `SystemClock` (in `CLOCK_IMPL`), not from a read of its own.
const SAMPLING: &[&str] = &["crates/collector/src/linux.rs", "crates/collector/src/portable.rs"];

/// Crates that may depend on an HTTP crate: the server, the agent's shipper, the notifiers,
/// the binary, and the InfluxDB backend, whose database speaks only HTTP.
const HTTP_CRATES: &[&str] = &["server", "agent", "notify", "procwatch", "store-influx"];
const HTTP_DEPS: &[&str] = &["axum", "hyper", "hyper-util", "reqwest", "tower", "tower-http"];

/// The longest a source file may be.
const MAX_LINES: usize = 800;

/// Files over [`MAX_LINES`] not split along their seams yet, each with why; remove an entry
/// once the file is split.
const TOO_LONG_FOR_NOW: &[(&str, &str)] = &[];

/// Library crates whose `lib.rs` does not deny `missing_docs` yet, and why; remove an entry
/// once its crate documents every `pub` item.
const DOCS_PENDING: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a source file up to its unit-test module.
fn non_test_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn reads_a_clock(text: &str) -> Option<String> {
    text.lines()
        .find(|l| {
            let code = l.split("//").next().unwrap_or("");
            code.contains("SystemTime::now")
                || code.contains("Instant::now")
                || code.contains(".elapsed()")
        })
        .map(|l| l.trim().to_owned())
}

fn crates() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    v.sort();
    v
}

#[test]
fn no_library_reads_the_clock_itself() {
    let root = root();
    let mut offenders = Vec::new();
    for (name, dir) in crates() {
        if name == "procwatch" {
            continue; // the binary constructs the SystemClock and may read time
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for file in files {
            let rel = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            let exempt = CLOCK_IMPL.contains(&rel.as_str()) || SAMPLING.contains(&rel.as_str());
            if let Some(line) = reads_a_clock(&non_test_text(&file)).filter(|_| !exempt) {
                offenders.push(format!("{rel}: {line}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "library code reads the clock itself; take a procwatch_model::clock::Clock instead:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_clock_check_sees_a_clock_read() {
    assert!(reads_a_clock("let t = std::time::Instant::now();").is_some());
    assert!(reads_a_clock("let t = SystemTime::now().duration_since(UNIX_EPOCH);").is_some());
    assert!(reads_a_clock("// Instant::now() in a comment").is_none());
    assert!(reads_a_clock("let took = started.elapsed();").is_some());
    assert!(reads_a_clock("let t = clock.instant();").is_none());
}

/// The dependency names of the `[dependencies]` and `[build-dependencies]` tables (and their
/// target-specific forms); `[dev-dependencies]` are for tests and do not count.
fn normal_dependencies(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut on = false;
    for line in manifest.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            let header = l.trim_matches(|c| c == '[' || c == ']');
            on = false;
            if header.contains("dev-dependencies") {
                continue;
            }
            if let Some((_, name)) = header.rsplit_once("dependencies.") {
                out.push(name.to_owned()); // [dependencies.NAME]
            } else {
                on = header.ends_with("dependencies");
            }
            continue;
        }
        if on && !l.starts_with('#') {
            if let Some(name) = l.split(['=', '.', ' ']).next().filter(|n| !n.is_empty()) {
                out.push(name.to_owned());
            }
        }
    }
    out
}

#[test]
fn http_crates_only_where_http_is_spoken() {
    let mut offenders = Vec::new();
    for (name, dir) in crates() {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        for dep in normal_dependencies(&manifest) {
            if HTTP_DEPS.contains(&dep.as_str()) && !HTTP_CRATES.contains(&name.as_str()) {
                offenders.push(format!("crates/{name} depends on {dep}"));
            }
        }
    }
    assert!(offenders.is_empty(), "HTTP crates outside {HTTP_CRATES:?}:\n{}", offenders.join("\n"));
}

#[test]
fn the_dependency_check_reads_only_normal_dependencies() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nreqwest.workspace = true\n\
                    serde = { workspace = true }\n# axum = 1\n[dev-dependencies]\naxum = \"0.7\"\n\
                    [target.'cfg(unix)'.dependencies]\nhyper = \"1\"\n[dependencies.tower]\nversion = \"0.5\"\n";
    assert_eq!(normal_dependencies(manifest), ["reqwest", "serde", "hyper", "tower"]);
}

#[test]
fn no_source_file_is_too_long() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let mut offenders = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        if rel.contains("/target/") {
            continue;
        }
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        if lines > MAX_LINES && !TOO_LONG_FOR_NOW.iter().any(|(f, _)| *f == rel) {
            offenders.push(format!("{rel}: {lines} lines"));
        }
    }
    assert!(
        offenders.is_empty(),
        "source files over {MAX_LINES} lines; split them along their seams, one idea per file:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn libraries_document_every_pub_item() {
    let mut offenders = Vec::new();
    for (name, dir) in crates() {
        let lib = dir.join("src/lib.rs");
        if !lib.is_file() || DOCS_PENDING.iter().any(|(c, _)| *c == name) {
            continue;
        }
        let text = std::fs::read_to_string(&lib).unwrap();
        if !text.lines().any(|l| l.trim() == "#![deny(missing_docs)]") {
            offenders.push(format!("crates/{name}/src/lib.rs"));
        }
    }
    assert!(
        offenders.is_empty(),
        "library crates without #![deny(missing_docs)] in lib.rs (document every pub item):\n{}",
        offenders.join("\n")
    );
}
