//! `procwatch hosts`: the hosts a server knows, and `hosts retire NAME` for one gone for good.
//!
//! - `procwatch hosts [--server URL] [--token T]` lists them (read token): name, last seen.
//! - `procwatch hosts retire NAME [--server URL] [--token T | --token-file F]` (write token;
//!   the admin token only steers agents) calls `POST /api/v1/hosts/NAME/retire`: the host
//!   leaves the list until it sends newer data, its open alarms close with the reason, and a
//!   `host_retired` event records who did it (`user@machine` of this command). Exit 1 when
//!   the server does not know the host or refuses.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::token::{ReadToken, WriteToken};
use super::{client_server, SERVER_HELP};

#[derive(Debug, clap::Args)]
pub struct HostsArgs {
    #[arg(long, env = "PROCWATCH_SERVER", value_name = "URL", default_value = super::DEFAULT_SERVER, help = SERVER_HELP)]
    server: String,

    #[command(flatten)]
    token: ReadToken,

    #[command(subcommand)]
    command: Option<HostsCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum HostsCommand {
    /// Retire a host gone for good: it leaves the host list (until it sends newer data), its
    /// open alarms close with the reason, and the retirement is recorded as an event.
    Retire(RetireArgs),
}

#[derive(Debug, clap::Args)]
struct RetireArgs {
    /// The host's name, as `procwatch hosts` lists it.
    name: String,

    #[arg(long, env = "PROCWATCH_SERVER", value_name = "URL", default_value = super::DEFAULT_SERVER, help = SERVER_HELP)]
    server: String,

    #[command(flatten)]
    token: WriteToken,
}

use procwatch_server::query::HostsResponse as Hosts;
use procwatch_server::retire::Retired;

pub fn run(args: HostsArgs) -> Result<()> {
    let (runtime, client) = client_runtime()?;
    match args.command {
        Some(HostsCommand::Retire(r)) => runtime.block_on(retire(&client, r)),
        None => runtime.block_on(list(&client, &args.server, args.token.resolve()?)),
    }
}

async fn list(client: &reqwest::Client, server: &str, token: Option<String>) -> Result<()> {
    let base = client_server(server)?;
    let mut req = client.get(format!("{base}/api/v1/hosts"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body = answer(req, &base).await?;
    let hosts: Hosts = serde_json::from_str(&body).context("unexpected /api/v1/hosts answer")?;
    let _ = hosts.now;
    if hosts.hosts.is_empty() {
        println!("(no hosts yet: no agent has sent data)");
    }
    for h in hosts.hosts {
        let state = if h.stale { "  STALE" } else { "" };
        println!("{:<40} last seen {} ago{state}", h.host, super::status::ago(h.age_ms));
    }
    Ok(())
}

async fn retire(client: &reqwest::Client, r: RetireArgs) -> Result<()> {
    let base = client_server(&r.server)?;
    let actor = actor();
    let mut req = client
        .post(format!("{base}/api/v1/hosts/{}/retire", encode_segment(&r.name)))
        .header("x-procwatch-actor", actor)
        // Every state-changing route takes JSON only (a cross-site form cannot send it).
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}");
    if let Some(t) = r.token.resolve()? {
        req = req.bearer_auth(t);
    }
    let body = answer(req, &base).await?;
    let retired: Retired = serde_json::from_str(&body).context("unexpected retire answer")?;
    let closed = retired.events.iter().filter(|e| e.end.is_some() && e.reason.is_some());
    let closed = closed.filter(|e| e.kind != procwatch_model::AlarmKind::HostRetired).count();
    println!(
        "retired {} (last seen {} ago); {closed} open alarm(s) closed",
        retired.host,
        super::status::ago(now_ms() - retired.last_seen)
    );
    Ok(())
}

/// A client command's runtime (one thread) and HTTP client (10 s a request).
pub(crate) fn client_runtime() -> Result<(tokio::runtime::Runtime, reqwest::Client)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    Ok((runtime, client))
}

/// Who runs this command, for the server's record (`X-Procwatch-Actor`): `user@machine`.
pub(crate) fn actor() -> String {
    format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "someone".into()),
        procwatch_collector::hostname().unwrap_or_else(|| "unknown".into())
    )
}

fn now_ms() -> i64 {
    procwatch_model::clock::Clock::now_ms(&procwatch_model::clock::SystemClock)
}

/// Sends `req`; the body of a 2xx, else an error with the server's JSON `error` message.
pub(crate) async fn answer(req: reqwest::RequestBuilder, base: &str) -> Result<String> {
    let resp = req.send().await.with_context(|| format!("cannot reach {base}"))?;
    let status = resp.status();
    let body = resp.text().await.context("cannot read the answer")?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        bail!("{base}: {status}: {msg}");
    }
    Ok(body)
}

/// Percent-encodes a path segment (host names may hold anything but `/` is the worry).
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
