//! `--config FILE`: a TOML file whose settings become `PROCWATCH_<NAME>` environment variables
//! (only where the variable is not already set) before clap parses the command line. Clap then
//! applies flag > env > file precedence on its own, and every flag is settable from the file
//! under the same name.
//!
//! Layout: top-level scalar keys apply to every subcommand that has the flag; `[agent]`,
//! `[server]`, `[alarm]`, `[status]` sections apply to that subcommand, and `up` reads `[up]`,
//! then `[agent]`, then `[server]` (the first that sets a name wins; sections win over the top
//! level). Tables and arrays of tables (alarm `[[rules]]`, `[alarm_defaults]`,
//! `[[notifiers]]`) are read by the component that owns them, from the same file.
//!
//! Validation, at start, of the whole file (every section, whichever subcommand runs), before
//! anything else happens (exit status 2); every message names the file:
//! - a TOML syntax error gives TOML's line, column and reason;
//! - an unknown section, or a key that names no flag of its section's subcommand (or, at the
//!   top level, of any subcommand), is named;
//! - each value is checked with its flag's own clap value parser (durations, sizes, enums
//!   with their possible values, numbers), flags without a value take `true`/`false`, and
//!   arrays or tables where a value belongs are refused: `[server] store = "mysql": invalid
//!   value 'mysql' for --store (possible values: sqlite, influxdb, clickhouse, memory)`.
//! - The component tables are checked by their owners when they start (the server's rules,
//!   the alarm service's notifiers), with messages that name the file too.
//!
//! The corpus `tests/invalid_configs/` holds one file per kind of mistake with the message it
//! must produce (`tests/config_e2e.rs`).

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// Sections that hold tables read by components, not flags.
const COMPONENT_TABLES: &[&str] = &["rules", "notifiers", "alarm_defaults"];

/// Finds `--config`, loads the file, checks it, and exports its settings for the chosen
/// subcommand.
///
/// Every error names the file; a syntax error names the line and column, a bad key or value
/// names the section and key, the value, and what is wrong (checked with the flag's own
/// parser, so a value from the file is held to the same rules as on the command line).
pub fn apply_config_file<C: CommandFactory>() -> Result<Vec<String>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = config_path(&args) else { return Ok(Vec::new()) };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let sub = subcommand(&args);
    let exports = exports_for::<C>(&path, &text, sub.as_deref())?;
    let mut from_file = Vec::new();
    for (name, value) in exports {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(&name, value);
            from_file.push(name);
        }
    }
    std::env::set_var("PROCWATCH_CONFIG", &path);
    Ok(from_file)
}

/// The sections a subcommand reads, most specific first (the first value of a name wins).
fn sections_of(sub: Option<&str>) -> Vec<&'static str> {
    match sub {
        Some("up") => vec!["up", "agent", "server"],
        Some(s) => SECTIONS.iter().copied().filter(|x| *x == s).collect(),
        None => vec![],
    }
}

/// Sections named after subcommands.
const SECTIONS: &[&str] = &["agent", "server", "alarm", "up", "status"];

/// Checks the file's text and returns the `(PROCWATCH_NAME, value)` pairs it sets for
/// subcommand `sub`, in precedence order. Pure apart from clap's command definition.
pub fn exports_for<C: CommandFactory>(
    path: &Path,
    text: &str,
    sub: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let file = path.display();
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        anyhow::anyhow!("config file {file}: invalid TOML: {}", e.to_string().trim_end())
    })?;
    let mut cmd = C::command();
    cmd.build();
    let sections = sections_of(sub);
    let flag_of = |command: &str, flag: &str| -> Option<clap::Arg> {
        cmd.find_subcommand(command)
            .and_then(|sc| sc.get_arguments().find(|a| a.get_long() == Some(flag)).cloned())
            .or_else(|| cmd.get_arguments().find(|a| a.get_long() == Some(flag)).cloned())
    };
    let check = |where_: &str, arg: &clap::Arg, key: &str, v: &toml::Value| {
        let value = scalar(path, &format!("{where_}{key}"), v)?;
        if let Err(reason) = check_value(arg, &value) {
            bail!("config file {file}: {where_}{key} = {v}: {reason}");
        }
        Ok(value)
    };
    // Every section is checked; the ones the subcommand reads are exported, most specific
    // first, then the top-level keys.
    let mut by_section: Vec<(&str, Vec<(String, String)>)> = Vec::new();
    for section in SECTIONS {
        let Some(inner) = table.get(*section) else { continue };
        // `server = "http://..."` at the top level is the --server flag, not a section.
        let Some(inner) = inner.as_table() else { continue };
        if cmd.find_subcommand(section).is_none() {
            continue; // an agent-only build has no such subcommand: not its section
        }
        let reads = sections.contains(section);
        let mut pairs = Vec::new();
        for (k, v) in inner {
            if COMPONENT_TABLES.contains(&k.as_str()) && !is_scalar(v) {
                continue;
            }
            let flag = k.replace('_', "-");
            // Under `up`, [agent] and [server] keys are checked with `up`'s own flag when it
            // has one (the value is used there), else with the section's subcommand.
            let arg = sub
                .filter(|s| reads && *s != *section)
                .and_then(|s| flag_of(s, &flag))
                .or_else(|| flag_of(section, &flag));
            let Some(arg) = arg else {
                bail!(
                    "config file {file}: [{section}] has unknown key {k:?} (no flag --{flag} on `procwatch {section}`)"
                );
            };
            let value = check(&format!("[{section}] "), &arg, k, v)?;
            pairs.push((env_of(&arg, k), value));
        }
        by_section.push((section, pairs));
    }
    let mut exports: Vec<(String, String)> = Vec::new();
    for section in &sections {
        if let Some((_, pairs)) = by_section.iter().find(|(s, _)| s == section) {
            exports.extend(pairs.iter().cloned());
        }
    }
    for (key, value) in &table {
        match value {
            toml::Value::Table(_) if SECTIONS.contains(&key.as_str()) => {}
            _ if COMPONENT_TABLES.contains(&key.as_str()) => {}
            v if is_scalar(v) => {
                let flag = key.replace('_', "-");
                match sub.and_then(|s| flag_of(s, &flag)) {
                    Some(arg) => {
                        let value = check("", &arg, key, v)?;
                        exports.push((env_of(&arg, key), value));
                    }
                    None => {
                        // Another subcommand's setting: checked with its flag, unused here.
                        let Some(arg) = SECTIONS.iter().find_map(|s| flag_of(s, &flag)) else {
                            bail!(
                                "config file {file}: unknown key {key:?} (no subcommand has a flag --{flag})"
                            );
                        };
                        let value = check("", &arg, key, v)?;
                        exports.push((env_name(key), value));
                    }
                }
            }
            toml::Value::Array(_) => bail!(
                "config file {file}: {key} must be a string, number or boolean, not an array"
            ),
            _ => bail!(
                "config file {file}: unknown section [{key}] (known: {}, [[rules]], [[notifiers]], [alarm_defaults])",
                SECTIONS.iter().map(|s| format!("[{s}]")).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok(exports)
}

/// Checks `value` with the flag's own value parser (a flag without a value takes a boolean).
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    if !arg.get_num_args().is_some_and(|n| n.takes_values()) {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("expected true or false for --{}", arg.get_long().unwrap_or("?"))),
        };
    }
    let long = arg.get_long().unwrap_or("?");
    let probe = clap::Command::new("procwatch")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            clap::Arg::new("v")
                .long("value")
                .value_name("VALUE")
                .action(clap::ArgAction::Set)
                .value_parser(arg.get_value_parser().clone()),
        );
    let possible: Vec<String> =
        arg.get_possible_values().iter().map(|p| p.get_name().to_owned()).collect();
    probe.try_get_matches_from(["--value", value]).map(|_| ()).map_err(|e| {
        let mut reason = clap_reason(&e).replace("'--value <VALUE>'", &format!("--{long}"));
        if !possible.is_empty() {
            reason += &format!(" (possible values: {})", possible.join(", "));
        }
        reason
    })
}

/// The reason of a clap value error, without clap's `error:` prefix and usage lines.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

fn is_scalar(v: &toml::Value) -> bool {
    !matches!(v, toml::Value::Table(_) | toml::Value::Array(_))
}

fn scalar(path: &Path, key: &str, v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => bail!(
            "config file {}: {key} must be a string, number or boolean, not {}",
            path.display(),
            v.type_str()
        ),
    })
}

/// The variable a key is exported as: its flag's own (`token` of `status` is
/// `PROCWATCH_READ_TOKEN`, of `agent` `PROCWATCH_WRITE_TOKEN`), else `PROCWATCH_<KEY>`.
fn env_of(arg: &clap::Arg, key: &str) -> String {
    arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| env_name(key))
}

fn env_name(key: &str) -> String {
    format!("PROCWATCH_{}", key.replace('-', "_").to_ascii_uppercase())
}

fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("PROCWATCH_CONFIG").map(PathBuf::from)
}

/// The first argument that is not a flag or a flag's value: the subcommand.
/// Checks every `PROCWATCH_*` variable the chosen subcommand reads (and the global ones)
/// with its flag's own parser, so a bad value is reported under the variable's name
/// (`environment variable PROCWATCH_INTERVAL="10": …`), not as if it were the flag. A flag
/// given on the command line wins over its variable, so its variable is not checked.
/// Variables the config file set were checked as the file's keys already.
pub fn check_env<C: CommandFactory>(from_file: &[String]) -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut cmd = C::command();
    cmd.build();
    let mut candidates: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    if let Some(sc) = subcommand(&args).and_then(|s| cmd.find_subcommand(&s).cloned()) {
        candidates.extend(sc.get_arguments().cloned());
    }
    for arg in candidates {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
        let name = env.to_string_lossy().into_owned();
        if from_file.contains(&name) {
            continue;
        }
        let on_line =
            args.iter().any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
        let Some(value) = std::env::var_os(env) else { continue };
        if on_line {
            continue;
        }
        let Some(value) = value.to_str() else {
            bail!("environment variable {name} is not valid UTF-8");
        };
        if let Err(reason) = check_value(&arg, value) {
            bail!("environment variable {name}={value:?}: {reason}");
        }
    }
    Ok(())
}

fn subcommand(args: &[String]) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--config" || a == "--log-format" {
            it.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        return Some(a.clone());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_subcommand_after_global_flags() {
        let args: Vec<String> =
            ["procwatch", "--config", "x.toml", "-v", "agent", "--once"].map(String::from).into();
        assert_eq!(subcommand(&args).as_deref(), Some("agent"));
        assert_eq!(config_path(&args), Some(PathBuf::from("x.toml")));
    }

    fn exports(text: &str, sub: &str) -> Result<Vec<(String, String)>> {
        exports_for::<crate::Cli>(Path::new("t.toml"), text, Some(sub))
    }

    #[test]
    fn up_reads_up_then_agent_then_server_and_sections_beat_top_level() {
        let text = "interval = \"7s\"\n[server]\ninterval = \"3s\"\nretention = \"1h\"\n\
                    [agent]\ninterval = \"2s\"\n[up]\ninterval = \"1s\"\n";
        let got = exports(text, "up").unwrap();
        let first = |name: &str| got.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(first("PROCWATCH_INTERVAL"), Some("1s"));
        assert_eq!(first("PROCWATCH_RETENTION"), Some("1h"));
        let got = exports(text, "server").unwrap();
        assert_eq!(got[0], ("PROCWATCH_INTERVAL".into(), "3s".into()));
    }

    #[test]
    fn values_are_checked_with_the_flags_parser() {
        let err = exports("[server]\nstore = \"mysql\"\n", "status").unwrap_err().to_string();
        assert!(
            err.contains("t.toml: [server] store = \"mysql\"") && err.contains("sqlite"),
            "{err}"
        );
        let err = exports("[agent]\nspool_fsync = 1\n", "agent").unwrap_err().to_string();
        assert!(err.contains("[agent] spool_fsync = 1"), "{err}");
        let err = exports("[agent]\nonce = \"yes\"\n", "agent").unwrap_err().to_string();
        assert!(err.contains("expected true or false"), "{err}");
        assert!(exports("[agent]\nonce = true\nspool_max_bytes = \"1GiB\"\n", "agent").is_ok());
        // `server` at the top level is the --server flag, not a section.
        assert!(exports("server = \"http://127.0.0.1:8000\"\n", "status").is_ok());
        let err = exports("nope = 1\n", "status").unwrap_err().to_string();
        assert!(err.contains("unknown key \"nope\""), "{err}");
        let err = exports("a = \n", "status").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn env_names_are_upper_snake() {
        assert_eq!(env_name("spool-dir"), "PROCWATCH_SPOOL_DIR");
        assert_eq!(env_name("retention"), "PROCWATCH_RETENTION");
    }
}
