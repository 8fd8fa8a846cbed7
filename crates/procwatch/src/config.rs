//! `--config FILE`: a TOML file whose settings become `PROCWATCH_<NAME>` environment variables
//! (only where the variable is not already set) before clap parses the command line. Clap then
//! applies flag > env > file precedence on its own, and every flag is settable from the file
//! under the same name.
//!
//! Layout: top-level scalar keys apply to every subcommand; `[agent]`, `[server]`, `[alarm]`
//! sections apply to that subcommand (`up` reads `[server]`, `[agent]` and `[up]`). Tables and
//! arrays of tables (alarm `[[rules]]`, `[[notifiers]]`) are read by the component that owns
//! them, from the same file. A key that names no flag of the subcommand is an error that names
//! the file and the key.

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use std::path::PathBuf;

/// Sections that hold tables read by components, not flags.
const COMPONENT_TABLES: &[&str] = &["rules", "notifiers", "alarm_defaults"];

/// Finds `--config`, loads the file, and exports its settings for the chosen subcommand.
pub fn apply_config_file<C: CommandFactory>() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = config_path(&args) else { return Ok(()) };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("config file {}: {}", path.display(), e))?;
    let sub = subcommand(&args);
    let cmd = C::command();
    let sections: Vec<&str> = match sub.as_deref() {
        Some("up") => vec!["server", "agent", "up"],
        Some(s) => vec![s],
        None => vec![],
    };
    let known = |section: &str| -> Vec<String> {
        let mut names: Vec<String> =
            cmd.get_arguments().filter_map(|a| a.get_long().map(str::to_owned)).collect();
        if let Some(sc) = cmd.find_subcommand(section) {
            names.extend(sc.get_arguments().filter_map(|a| a.get_long().map(str::to_owned)));
        }
        names
    };
    let mut exports: Vec<(String, String)> = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(inner) if ["agent", "server", "alarm", "up"].contains(&key.as_str()) => {
                if !sections.contains(&key.as_str()) {
                    continue;
                }
                let allowed = known(key);
                for (k, v) in inner {
                    if COMPONENT_TABLES.contains(&k.as_str()) && !is_scalar(v) {
                        continue;
                    }
                    let flag = k.replace('_', "-");
                    if !allowed.contains(&flag) {
                        bail!(
                            "config file {}: [{key}] has unknown key {k:?} (no flag --{flag} on `procwatch {key}`)",
                            path.display()
                        );
                    }
                    exports.push((env_name(k), scalar(&path, &format!("{key}.{k}"), v)?));
                }
            }
            _ if COMPONENT_TABLES.contains(&key.as_str()) => {}
            v if is_scalar(v) => exports.push((env_name(key), scalar(&path, key, v)?)),
            _ => bail!("config file {}: unknown section [{key}]", path.display()),
        }
    }
    for (name, value) in exports {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(&name, value);
        }
    }
    std::env::set_var("PROCWATCH_CONFIG", &path);
    Ok(())
}

fn is_scalar(v: &toml::Value) -> bool {
    !matches!(v, toml::Value::Table(_) | toml::Value::Array(_))
}

fn scalar(path: &std::path::Path, key: &str, v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => bail!("config file {}: {key} must be a string, number or boolean", path.display()),
    })
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

    #[test]
    fn env_names_are_upper_snake() {
        assert_eq!(env_name("spool-dir"), "PROCWATCH_SPOOL_DIR");
        assert_eq!(env_name("retention"), "PROCWATCH_RETENTION");
    }
}
