//! The client commands' tokens, one variable per role, the same names the server reads:
//!
//! | role  | commands                      | flag / file flag         | variables                                           |
//! |-------|-------------------------------|--------------------------|-----------------------------------------------------|
//! | write | `agent`, `hosts retire`, `loadgen` | `--token`, `--token-file` | `PROCWATCH_WRITE_TOKEN`, `PROCWATCH_WRITE_TOKEN_FILE` |
//! | read  | `status`, `alarm`, `agents`   | `--token`, `--token-file` | `PROCWATCH_READ_TOKEN`, `PROCWATCH_READ_TOKEN_FILE`   |
//! | admin | `agents set`                  | `--admin-token`, `--admin-token-file` | `PROCWATCH_ADMIN_TOKEN`, `PROCWATCH_ADMIN_TOKEN_FILE` |
//!
//! So one environment (or one `EnvironmentFile=`) can hold both tokens, and exporting the
//! write token for the agent never makes `status` send it (and fail with 403).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The write token of a client command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WriteToken {
    /// The server's write token (sent as a bearer token).
    #[arg(
        long = "token",
        env = "PROCWATCH_WRITE_TOKEN",
        value_name = "T",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the write token (surrounding whitespace ignored).
    #[arg(long = "token-file", env = "PROCWATCH_WRITE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The read token of a client command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReadToken {
    /// The server's read token (sent as a bearer token).
    #[arg(
        long = "token",
        env = "PROCWATCH_READ_TOKEN",
        value_name = "T",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the read token (surrounding whitespace ignored).
    #[arg(long = "token-file", env = "PROCWATCH_READ_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The admin token of a client command (`agents set`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminToken {
    /// The server's admin token (sent as a bearer token; distinct from the read and write
    /// tokens).
    #[arg(
        long = "admin-token",
        env = "PROCWATCH_ADMIN_TOKEN",
        value_name = "T",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<String>,

    /// File holding the admin token (surrounding whitespace ignored).
    #[arg(long = "admin-token-file", env = "PROCWATCH_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl AdminToken {
    pub fn resolve(&self) -> Result<Option<String>> {
        resolve(self.admin_token.as_deref(), self.admin_token_file.as_deref(), "admin")
    }
}

impl WriteToken {
    pub fn resolve(&self) -> Result<Option<String>> {
        resolve(self.token.as_deref(), self.token_file.as_deref(), "write")
    }
}

impl ReadToken {
    pub fn resolve(&self) -> Result<Option<String>> {
        resolve(self.token.as_deref(), self.token_file.as_deref(), "read")
    }
}

fn resolve(token: Option<&str>, file: Option<&Path>, role: &str) -> Result<Option<String>> {
    match (token, file) {
        (Some(t), _) => Ok(Some(t.to_owned())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the {role} token file {}", path.display()))?;
            let t = text.trim();
            anyhow::ensure!(!t.is_empty(), "the {role} token file {} is empty", path.display());
            Ok(Some(t.to_owned()))
        }
        (None, None) => Ok(None),
    }
}
