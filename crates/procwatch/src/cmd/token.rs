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

/// Defines a role's token arguments: the token, or a file holding it (not both), read by
/// `resolve`; `Debug` never shows the token.
#[rustfmt::skip] // rustfmt re-indents attributes inside macro_rules on every run
macro_rules! role_token {
    ($name:ident, $role:literal, $token:ident, $file:ident, $long:literal, $long_file:literal,
     $env:literal, $env_file:literal) => {
        #[doc = concat!("The ", $role, " token of a client command.")]
        #[derive(Clone, Default, clap::Args)]
        pub struct $name {
            #[doc = concat!("The server's ", $role, " token (sent as a bearer token).")]
            #[arg(
                long = $long,
                env = $env,
                value_name = "T",
                hide_env_values = true,
                conflicts_with = stringify!($file)
            )]
            pub $token: Option<String>,

            #[doc = concat!("File holding the ", $role, " token (surrounding whitespace ignored).")]
            #[arg(long = $long_file, env = $env_file, value_name = "FILE")]
            pub $file: Option<PathBuf>,
        }

        impl $name {
            /// The token given, read from its file if need be.
            pub fn resolve(&self) -> Result<Option<String>> {
                resolve(self.$token.as_deref(), self.$file.as_deref(), $role)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field(stringify!($token), &self.$token.as_ref().map(|_| "<redacted>"))
                    .field(stringify!($file), &self.$file)
                    .finish()
            }
        }
    };
}

role_token!(
    WriteToken,
    "write",
    token,
    token_file,
    "token",
    "token-file",
    "PROCWATCH_WRITE_TOKEN",
    "PROCWATCH_WRITE_TOKEN_FILE"
);
role_token!(
    ReadToken,
    "read",
    token,
    token_file,
    "token",
    "token-file",
    "PROCWATCH_READ_TOKEN",
    "PROCWATCH_READ_TOKEN_FILE"
);
// The server reads the same flags and variables for its own admin token (`cmd::server`).
role_token!(
    AdminToken,
    "admin",
    admin_token,
    admin_token_file,
    "admin-token",
    "admin-token-file",
    "PROCWATCH_ADMIN_TOKEN",
    "PROCWATCH_ADMIN_TOKEN_FILE"
);

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
