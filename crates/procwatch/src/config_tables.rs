//! The component tables of the `--config` file (`[alarm_defaults]`, `[[rules]]`,
//! `[[notifiers]]`), checked at start by `main` right after `config.rs` checked the flags'
//! keys, whichever subcommand runs: one validation path, one message format, exit 2. Kept out
//! of `config.rs`, which the fuzz crate includes by path without the alarm and notify crates.

use anyhow::{bail, Result};
use std::path::Path;

/// Checks the tables of the file `config.rs` exported as `PROCWATCH_CONFIG` (if any).
pub fn check_file() -> Result<()> {
    let Some(path) = std::env::var_os("PROCWATCH_CONFIG").map(std::path::PathBuf::from) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let Ok(table) = text.parse::<toml::Table>() else { return Ok(()) };
    check_component_tables(&path, &table)
}

/// The component tables (`[alarm_defaults]`, `[[rules]]`, `[[notifiers]]`) checked here, at
/// start, whichever subcommand runs (`agent --once` too), with the same message format and
/// exit status 2 as every other key: `config file F: [[rules]] #2: reason`. Their owners
/// (the server's evaluator, `procwatch alarm`) read them again from the same file.
fn check_component_tables(path: &Path, table: &toml::Table) -> Result<()> {
    use procwatch_alarm::{RuleSet, RuleSpec};
    use procwatch_notify::NotifierSpec;
    let file = path.display();
    let defaults: RuleSpec = match table.get("alarm_defaults") {
        None => RuleSpec::default(),
        Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("config file {file}: [alarm_defaults]: {}", e.message())
        })?,
    };
    let list = |name: &str| -> Result<Vec<toml::Value>> {
        match table.get(name) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => Ok(items.clone()),
            Some(_) => bail!("config file {file}: {name} must be an array of tables ([[{name}]])"),
        }
    };
    let mut rules = Vec::new();
    for (i, v) in list("rules")?.into_iter().enumerate() {
        let spec: RuleSpec = v.try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("config file {file}: [[rules]] #{}: {}", i + 1, e.message())
        })?;
        // Each rule on its own first, so the message can say which one.
        if let Err(e) = RuleSet::from_specs(&defaults, std::slice::from_ref(&spec)) {
            bail!("config file {file}: [[rules]] #{}: {e}", i + 1);
        }
        rules.push(spec);
    }
    if let Err(e) = RuleSet::from_specs(&defaults, &rules) {
        bail!("config file {file}: [alarm_defaults]: {e}");
    }
    for (i, v) in list("notifiers")?.into_iter().enumerate() {
        let spec: NotifierSpec = v.try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("config file {file}: [[notifiers]] #{}: {}", i + 1, e.message())
        })?;
        if let Err(e) = spec.build() {
            bail!("config file {file}: [[notifiers]] #{}: {e}", i + 1);
        }
    }
    Ok(())
}
