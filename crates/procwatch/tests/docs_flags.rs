//! The docs cannot drift from the binary: every `procwatch ...` command in README.md,
//! docs/guide.md and the systemd units names a real subcommand and only flags its `--help`
//! lists; every `PROCWATCH_*` variable they (or procwatch.example.toml) name is one a flag
//! reads; every setting procwatch.example.toml shows as a default (`# key = value`) is the
//! binary's default, and a setting without a default is never shown as one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn help(args: &[&str]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_procwatch"))
        .args(args)
        .arg("--help")
        .env_remove("PROCWATCH_CONFIG")
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `--flag` → its help block (the text up to the next flag).
fn flags(help: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in help.lines() {
        let t = line.trim_start();
        let t = t
            .strip_prefix("-v, ")
            .or(t.strip_prefix("-h, "))
            .or(t.strip_prefix("-V, "))
            .unwrap_or(t);
        if let Some(rest) = t.strip_prefix("--") {
            if let Some((name, text)) = current.take() {
                out.insert(name, text);
            }
            let name: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            current = Some((name, t.to_owned()));
        } else if let Some((_, text)) = &mut current {
            text.push(' ');
            text.push_str(t);
        }
    }
    if let Some((name, text)) = current {
        out.insert(name, text);
    }
    out
}

fn default_of(block: &str) -> Option<String> {
    let i = block.find("[default: ")?;
    let rest = &block[i + "[default: ".len()..];
    Some(rest[..rest.find(']')?].to_owned())
}

const SUBCOMMANDS: &[&str] = &["agent", "server", "alarm", "up", "status", "hosts", "loadgen"];

/// Every `procwatch <sub> [<subsub>] args...` command in `text`: from code spans, and from
/// lines of code blocks.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pieces: Vec<String> = text.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    pieces.extend(text.lines().map(str::to_owned));
    for piece in pieces {
        let mut rest = piece.as_str();
        while let Some(i) = rest.find("procwatch ") {
            let cmd = &rest[i..];
            let end = cmd.find(['\n', '`', '|', ';', ')', '#', '"', '\'']).unwrap_or(cmd.len());
            let cmd = cmd[..end].trim().to_owned();
            let sub = cmd.split_whitespace().nth(1).unwrap_or("");
            if SUBCOMMANDS.contains(&sub) || sub.starts_with("--") {
                out.push(cmd);
            }
            rest = &rest[i + "procwatch ".len()..];
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_documented_command_and_flag_exists() {
    let mut files: Vec<PathBuf> = vec![root().join("README.md"), root().join("docs/guide.md")];
    for unit in std::fs::read_dir(root().join("deploy/systemd")).unwrap() {
        files.push(unit.unwrap().path());
    }
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for cmd in commands(&text) {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            // Global flags may come before the subcommand (`procwatch --config F agent`).
            let mut i = 1;
            let mut path: Vec<&str> = Vec::new();
            while i < words.len() {
                let w = words[i];
                if w.starts_with("--") && path.is_empty() {
                    i += if w.contains('=') { 1 } else { 2 };
                    continue;
                }
                if !w.starts_with('-')
                    && (path.is_empty() || ["backtest", "bench", "retire"].contains(&w))
                {
                    if path.is_empty() && !SUBCOMMANDS.contains(&w) {
                        break;
                    }
                    path.push(w);
                }
                i += 1;
            }
            if path.is_empty() {
                continue;
            }
            let h = help(&path)
                .unwrap_or_else(|| panic!("{}: `{cmd}`: no such command", file.display()));
            let known = flags(&h);
            for w in &words {
                let Some(flag) = w.strip_prefix("--") else { continue };
                let flag = flag.split('=').next().unwrap();
                if flag.is_empty() || !flag.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    continue;
                }
                assert!(
                    known.contains_key(flag),
                    "{}: `{cmd}`: `procwatch {}` has no --{flag}",
                    file.display(),
                    path.join(" ")
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} flags found in the docs");
}

#[test]
fn every_documented_variable_is_read_by_a_flag() {
    let mut envs = String::new();
    for sub in SUBCOMMANDS {
        envs.push_str(&help(&[sub]).unwrap());
    }
    envs.push_str(&help(&["hosts", "retire"]).unwrap());
    envs.push_str(&help(&["alarm", "backtest"]).unwrap());
    // Read by the logger, not a flag.
    let not_flags = ["PROCWATCH_LOG"];
    for name in ["README.md", "docs/guide.md", "procwatch.example.toml", "deploy/compose.yaml"] {
        let text = std::fs::read_to_string(root().join(name)).unwrap();
        for (i, _) in text.match_indices("PROCWATCH_") {
            let var: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let var = var.trim_end_matches('_');
            if var == "PROCWATCH"
                || not_flags.contains(&var)
                || text[i..].starts_with("PROCWATCH_<")
            {
                continue;
            }
            assert!(
                envs.contains(&format!("[env: {var}")),
                "{name} names {var}, which no flag reads"
            );
        }
    }
}

#[test]
fn the_example_defaults_are_the_binarys() {
    let text = std::fs::read_to_string(root().join("procwatch.example.toml")).unwrap();
    let mut section = String::new();
    let mut checked = 0;
    for line in text.lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        // `# key = value`: a setting at its default (`## key =` lines are examples).
        let Some(rest) = line.strip_prefix("# ") else { continue };
        let Some((key, value)) = rest.split_once(" = ") else { continue };
        if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let sub = match section.as_str() {
            "" => "agent",
            s if SUBCOMMANDS.contains(&s) => s,
            _ => continue, // [alarm_defaults] etc.: checked by the config tests
        };
        let value = value.split(" #").next().unwrap().trim().trim_matches('"');
        let flag = key.replace('_', "-");
        let blocks = flags(&help(&[sub]).unwrap());
        let block = blocks
            .get(&flag)
            .unwrap_or_else(|| panic!("[{section}] {key}: `procwatch {sub}` has no --{flag}"));
        let takes_value = block.starts_with(&format!("--{flag} <"));
        match default_of(block) {
            // A default with a note (`procwatch; on 2.x the database's default`) starts with it.
            Some(d) => assert!(
                d == value || d.starts_with(&format!("{value};")),
                "[{section}] {key}: the example says {value}, the binary {d}"
            ),
            None if !takes_value => assert_eq!(value, "false", "[{section}] {key}: a switch is off by default"),
            None => panic!(
                "[{section}] {key} = {value} is shown as a default, but --{flag} has none (write `## {key} = ...`)"
            ),
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} defaults checked");
}
