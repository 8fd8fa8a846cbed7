//! Integration tests: the real server on `127.0.0.1:0`, talked to over real HTTP.

mod gated_store;
mod util;

mod alarms_restore;
mod cluster_share;
mod data_path;
mod governor;
mod hardening;
mod hardening2;
mod ingest;
mod props;
mod query;
mod server;
