//! One module per subcommand: flag definitions and the glue into the library crates.

pub mod agent;
pub mod agents;
#[cfg(feature = "server")]
pub mod alarm;
#[cfg(feature = "server")]
pub mod cluster;
pub mod hosts;
pub mod loadgen;
#[cfg(feature = "server")]
pub mod server;
pub mod signal;
pub mod status;
pub mod timewarp;
pub mod token;
#[cfg(feature = "server")]
pub mod up;

/// Where every client command (`agent`, `alarm`, `status`, `hosts`) finds the server when
/// neither `--server` nor `PROCWATCH_SERVER` (nor the config file) says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

/// The one `--server` rule of the client commands, in their `--help`.
pub const SERVER_HELP: &str = "The server's base URL. Every client command (agent, alarm, status, hosts) reads it the same way: --server, else PROCWATCH_SERVER, else `server` in the config file, else http://127.0.0.1:8000.";

/// A `--server` value checked: an http(s) URL, without a trailing slash.
pub fn client_server(server: &str) -> anyhow::Result<String> {
    let base = server.trim_end_matches('/').to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        anyhow::bail!("--server {base:?}: expected an http:// or https:// URL");
    }
    Ok(base)
}
