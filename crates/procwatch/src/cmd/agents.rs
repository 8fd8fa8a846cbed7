//! `procwatch agents`: the agents a server hears from, and `agents set` to steer them.
//!
//! - `procwatch agents [--server URL] [--token T] [--format table|json]` lists them (read
//!   token): host, agent version, interval, directive version (and the one pending), last
//!   seen, spool backlog, drops, paused, and the last directive an agent refused, with why.
//! - `procwatch agents set HOST-GLOB key=value... [--admin-token T | --admin-token-file F]`
//!   posts a directive (admin token): `interval=5s`, `paused=true|false`,
//!   `include=nginx*,postgres` (`include=` for every process), `exclude=...`,
//!   `metrics=io,fds` (`metrics=` for none), `sweep=now`. Matching agents get it in the
//!   acknowledgement of their next batch; `procwatch agents` shows when they run it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use procwatch_model::directive::{DirectiveError, SettingsChange};
use procwatch_server::agents::routes::{AgentsResponse, DirectiveAccepted, DirectiveRequest};

use super::hosts::{actor, answer, client_runtime};
use super::token::{AdminToken, ReadToken};
use super::{client_server, SERVER_HELP};

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    #[arg(long, env = "PROCWATCH_SERVER", value_name = "URL", default_value = super::DEFAULT_SERVER, help = SERVER_HELP)]
    server: String,

    #[command(flatten)]
    token: ReadToken,

    /// `table` (for a person) or `json` (the server's answer as is).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,

    #[command(subcommand)]
    command: Option<AgentsCommand>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Subcommand)]
enum AgentsCommand {
    /// Steer the agents of a host or host glob: interval=5s paused=true|false
    /// include=GLOB,... exclude=GLOB,... metrics=io,fds,... sweep=now (admin token).
    Set(SetArgs),
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    #[arg(long, env = "PROCWATCH_SERVER", value_name = "URL", default_value = super::DEFAULT_SERVER, help = SERVER_HELP)]
    server: String,

    #[command(flatten)]
    token: AdminToken,

    /// A host name or glob (`web-*`; `*` for every host).
    hosts: String,

    /// The changes, `key=value`: interval, paused, include, exclude, metrics, sweep=now.
    #[arg(required = true, value_name = "KEY=VALUE")]
    changes: Vec<String>,
}

pub fn run(args: AgentsArgs) -> Result<()> {
    let (runtime, client) = client_runtime()?;
    let work = async {
        match args.command {
            Some(AgentsCommand::Set(s)) => set(&client, s).await,
            None => list(&client, &args.server, args.token.resolve()?, args.format).await,
        }
    };
    runtime.block_on(work)
}

async fn list(
    client: &reqwest::Client,
    server: &str,
    token: Option<String>,
    format: Format,
) -> Result<()> {
    let base = client_server(server)?;
    let mut req = client.get(format!("{base}/api/v1/agents"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body = answer(req, &base).await?;
    let agents: AgentsResponse =
        serde_json::from_str(&body).context("unexpected /api/v1/agents answer")?;
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(&agents)?);
        return Ok(());
    }
    if agents.agents.is_empty() {
        println!("(no agents yet: no batch received since the server started)");
        return Ok(());
    }
    let now = procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock);
    println!(
        "{:<28} {:<18} {:>9} {:>10} {:>9} {:>8} {:>8}  STATE",
        "HOST", "AGENT", "INTERVAL", "DIRECTIVE", "SEEN", "BACKLOG", "DROPS"
    );
    for a in &agents.agents {
        let directive = match a.pending_version {
            Some(p) => format!("v{}>v{p}", a.directive_version),
            None if a.steerable => format!("v{}", a.directive_version),
            None => "-".to_owned(),
        };
        let state = if !a.steerable {
            "not steerable (older agent)"
        } else if a.paused {
            "paused"
        } else {
            "running"
        };
        println!(
            "{:<28} {:<18} {:>9} {:>10} {:>9} {:>8} {:>8}  {state}",
            a.host,
            a.agent,
            humantime::format_duration(Duration::from_millis(a.interval_ms)).to_string(),
            directive,
            format!("{} ago", super::status::ago(now - a.last_seen)),
            a.spool_backlog,
            a.dropped_samples
        );
        if let Some(DirectiveError { version, message }) = &a.directive_error {
            println!("{:<28} refused directive v{version}: {message}", "");
        }
    }
    Ok(())
}

/// Turns `key=value` words into a change; an unknown key or a bad value is an error that
/// names it.
fn parse_changes(words: &[String]) -> Result<SettingsChange> {
    let list = |v: &str| -> Vec<String> {
        v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    };
    let boolean = |k: &str, v: &str| -> Result<bool> {
        match v {
            "true" | "yes" | "on" => Ok(true),
            "false" | "no" | "off" => Ok(false),
            _ => bail!("{k}={v}: expected true or false"),
        }
    };
    let mut c = SettingsChange::default();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            bail!("{w:?}: expected key=value (interval, paused, include, exclude, metrics, sweep)");
        };
        let v = v.trim();
        match k.trim() {
            "interval" => c.interval = Some(v.to_owned()),
            "paused" => c.paused = Some(boolean(k, v)?),
            "include" => c.include = Some(list(v)),
            "exclude" => c.exclude = Some(list(v)),
            "metrics" => c.metrics = Some(list(v)),
            "sweep" | "sweep_now" if matches!(v, "now" | "true") => c.sweep_now = Some(true),
            "sweep" | "sweep_now" => bail!("{w}: write sweep=now"),
            other => bail!(
                "unknown key {other:?}: expected interval, paused, include, exclude, metrics or sweep"
            ),
        }
    }
    Ok(c)
}

async fn set(client: &reqwest::Client, s: SetArgs) -> Result<()> {
    let base = client_server(&s.server)?;
    let change = parse_changes(&s.changes)?;
    let body = serde_json::to_vec(&DirectiveRequest { hosts: s.hosts.clone(), set: change })?;
    let mut req = client
        .post(format!("{base}/api/v1/agents/directives"))
        .header("x-procwatch-actor", actor())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    match s.token.resolve()? {
        Some(t) => req = req.bearer_auth(t),
        None => bail!(
            "agents set needs the server's admin token: --admin-token, --admin-token-file or PROCWATCH_ADMIN_TOKEN"
        ),
    }
    let answer = answer(req, &base).await?;
    let done: DirectiveAccepted =
        serde_json::from_str(&answer).context("unexpected directive answer")?;
    println!(
        "directive v{} for {} stored; {} agent(s) listed match and get it with their next batch (see `procwatch agents`)",
        done.directive.version, done.directive.hosts, done.matching_agents
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_words_make_a_change() {
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let c = parse_changes(&w(&[
            "interval=5s",
            "paused=true",
            "include=nginx*,postgres",
            "metrics=io,fds",
            "sweep=now",
            "exclude=",
        ]))
        .unwrap();
        assert_eq!(c.interval.as_deref(), Some("5s"));
        assert_eq!(c.paused, Some(true));
        assert_eq!(c.include, Some(vec!["nginx*".to_owned(), "postgres".to_owned()]));
        assert_eq!(c.exclude, Some(vec![]));
        assert_eq!(c.metrics, Some(vec!["io".to_owned(), "fds".to_owned()]));
        assert_eq!(c.sweep_now, Some(true));
        assert!(parse_changes(&w(&["colour=red"])).is_err());
        assert!(parse_changes(&w(&["paused=maybe"])).is_err());
        assert!(parse_changes(&w(&["interval"])).is_err());
    }
}
