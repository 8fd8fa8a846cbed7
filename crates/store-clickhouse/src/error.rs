//! What goes wrong talking to ClickHouse, and which of it means "retry later".

use std::sync::Arc;
use std::time::Duration;

use procwatch_store::StoreError;

/// What went wrong talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// The configuration cannot work.
    #[error("invalid clickhouse configuration: {0}")]
    Config(String),
    /// The request failed (network, or ClickHouse answered an error).
    #[error("clickhouse at {url}: {source}")]
    Client {
        /// The node's URL.
        url: String,
        /// What the client reported (ClickHouse's own message for a server-side error).
        #[source]
        source: clickhouse::error::Error,
    },
    /// The request did not finish within the configured timeout.
    #[error("clickhouse at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The node's URL.
        url: String,
        /// The configured deadline.
        timeout: Duration,
    },
    /// A stored JSON document does not parse (a corrupt or foreign row).
    #[error("clickhouse row does not parse: {0}")]
    Corrupt(String),
    /// The group commit could not hand a batch's INSERT its answer (a bug: please report it).
    #[error("clickhouse group commit: {0}")]
    GroupCommit(String),
}

/// ClickHouse error codes that mean "the cluster cannot take this now; retry later".
const UNAVAILABLE_CODES: &[(&str, &str)] = &[
    ("Code: 242,", "ZooKeeper is unreachable, so the replicated tables are read-only"),
    ("Code: 225,", "ClickHouse has no ZooKeeper session"),
    ("Code: 999,", "ZooKeeper is unreachable"),
    ("Code: 279,", "every replica of a shard is down"),
    ("Code: 210,", "a shard cannot be reached"),
    ("Code: 209,", "a shard timed out"),
    ("Code: 319,", "ZooKeeper cannot confirm the insert"),
    ("Code: 159,", "a distributed DDL timed out (is every node up?)"),
    ("Code: 32,", "a node closed the connection mid-request (a replica went down?)"),
];

impl ClickHouseError {
    /// Why the cluster cannot serve this now, when retrying later may succeed.
    pub(crate) fn unavailable(&self) -> Option<&'static str> {
        match self {
            ClickHouseError::Timeout { .. } => Some("ClickHouse did not answer in time"),
            ClickHouseError::Client { source, .. } => {
                let text = source.to_string();
                if let Some((_, why)) = UNAVAILABLE_CODES.iter().find(|(c, _)| text.contains(c)) {
                    return Some(why);
                }
                matches!(
                    source,
                    clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
                )
                .then_some("ClickHouse cannot be reached")
            }
            ClickHouseError::Config(_)
            | ClickHouseError::Corrupt(_)
            | ClickHouseError::GroupCommit(_) => None,
        }
    }
}

impl From<ClickHouseError> for StoreError {
    fn from(e: ClickHouseError) -> Self {
        if let Some(why) = e.unavailable() {
            return StoreError::Unavailable(format!("{why}; retry later ({e})"));
        }
        match e {
            ClickHouseError::Config(m) => StoreError::InvalidInput(m),
            other => StoreError::Other(Box::new(other)),
        }
    }
}

/// A shared error as the caller's [`StoreError`] (one INSERT's error answers every batch of
/// its group).
pub(crate) fn shared_error(e: Arc<ClickHouseError>) -> StoreError {
    match Arc::try_unwrap(e) {
        Ok(e) => e.into(),
        Err(e) => match e.unavailable() {
            Some(why) => StoreError::Unavailable(format!("{why}; retry later ({e})")),
            None => StoreError::Other(Box::new(e)),
        },
    }
}

impl ClickHouseError {
    /// Whether the node could not be reached or did not answer in time (the request may or
    /// may not have been executed): the cases where a shard's data goes to its next replica.
    pub(crate) fn is_connection(&self) -> bool {
        match self {
            ClickHouseError::Timeout { .. } => true,
            ClickHouseError::Client { source, .. } => matches!(
                source,
                clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
            ),
            _ => false,
        }
    }
}
