//! `procwatch server`: parses flags, builds the tokio runtime, opens the store, binds, and runs
//! `procwatch_server::run` until SIGINT or SIGTERM (then finishes the requests in flight and
//! closes the store).
//!
//! `--addr-file FILE` writes the bound address (`127.0.0.1:41234`) to FILE once the socket is
//! listening, so scripts and tests can use `--listen 127.0.0.1:0`.
//!
//! Hardening (see `procwatch_server::limits` for every limit and its answer):
//! - Tokens come from `--write-token`/`--read-token`, their `PROCWATCH_*` env vars, or
//!   `--write-token-file`/`--read-token-file`; they are never logged.
//! - A listen address that is not loopback needs both tokens, else the server refuses to start
//!   unless `--insecure` is given (a monitor open to the network would take anyone's data and
//!   show every process name).
//! - `--tls-cert FILE --tls-key FILE` (PEM) serve HTTPS with rustls; agents verify it
//!   (`procwatch agent --ca-file` for a private CA). A self-signed certificate must say
//!   `CA:FALSE` (webpki refuses a CA certificate as the server's own): `openssl req -x509 ...
//!   -addext basicConstraints=critical,CA:FALSE -addext subjectAltName=DNS:<name>`.
//! - Limits: `--max-body 16MiB` (wire and decompressed), `--max-samples 100000`,
//!   `--max-request-time 30s` (408), `--header-read-timeout 30s` (slow clients),
//!   `--max-concurrent-requests 1024` and `--max-inflight-writes 64` (429), `--ingest-rate 200`
//!   requests/s per write token (or per peer IP without one) with `--ingest-burst 400` (429 with
//!   `Retry-After`; 0 = off).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use procwatch_server::ServerConfig;
use procwatch_store::Storage;
use procwatch_store_sqlite::{Durability, SqliteOptions, SqliteStore};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Time-compressed tests only (see `cmd::timewarp`): SPEED@ORIGIN_MS.
    #[arg(long, env = "PROCWATCH_TIME_WARP", hide = true, value_name = "SPEED@ORIGIN_MS")]
    pub time_warp: Option<super::timewarp::Warp>,

    /// Address to listen on (port 0: any free port; see --addr-file).
    #[arg(long, env = "PROCWATCH_LISTEN", default_value = "127.0.0.1:8000", value_name = "ADDR")]
    pub listen: String,

    /// Directory of the embedded store.
    #[arg(
        long,
        env = "PROCWATCH_DATA_DIR",
        default_value = "./procwatch-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// How long samples are kept (humantime: 48h, 7d, 30m).
    #[arg(long, env = "PROCWATCH_RETENTION", default_value = "48h", value_parser = procwatch_model::duration::parse)]
    pub retention: Duration,

    /// How long the embedded store keeps its 5-minute roll-ups (min/mean/max per process),
    /// which answer history past --retention (humantime: 30d). Ignored by --store influxdb.
    #[arg(long, env = "PROCWATCH_ROLLUP_RETENTION", default_value = "30d", value_parser = procwatch_model::duration::parse)]
    pub rollup_retention: Duration,

    /// How often retention runs (it also runs at start).
    #[arg(long, env = "PROCWATCH_RETENTION_INTERVAL", default_value = "1m", value_parser = procwatch_model::duration::parse)]
    pub retention_interval: Duration,

    /// Storage engine.
    #[arg(long, env = "PROCWATCH_STORE", default_value = "sqlite")]
    pub store: StoreKind,

    /// What a 2xx on ingestion survives (embedded store). `durable`: power loss too, the WAL is
    /// fsynced before the answer, concurrent batches sharing one fsync (group commit);
    /// `relaxed`: a kill of the server, not a power cut (no fsync per batch).
    #[arg(long, env = "PROCWATCH_DURABILITY", default_value = "durable", value_name = "MODE")]
    pub durability: DurabilityArg,

    /// Per-host write tokens: a file of `HOST TOKEN` lines (`#` comments). A batch must be for
    /// its token's host (403 otherwise); the global --write-token still writes any host unless
    /// --host-tokens-only.
    #[arg(long, env = "PROCWATCH_HOST_TOKENS", value_name = "FILE")]
    pub host_tokens: Option<PathBuf>,

    /// Refuse the global --write-token on ingestion: only per-host tokens write.
    #[arg(long, env = "PROCWATCH_HOST_TOKENS_ONLY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", requires = "host_tokens")]
    pub host_tokens_only: bool,

    /// Distinct process names one batch may hold (413 past it); 0 = no cap.
    #[arg(
        long,
        env = "PROCWATCH_MAX_SERIES_PER_BATCH",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_series_per_batch: usize,

    /// Distinct series (process names) one host may have (429 past it); 0 = no cap.
    #[arg(long, env = "PROCWATCH_MAX_SERIES_PER_HOST", default_value_t = 20_000, value_name = "N")]
    pub max_series_per_host: usize,

    /// Distinct series the server holds in total (507 past it); 0 = no cap.
    #[arg(long, env = "PROCWATCH_MAX_SERIES_TOTAL", default_value_t = 1_000_000, value_name = "N")]
    pub max_series_total: usize,

    /// Cardinality governor: processes per host kept at full resolution by usage (cpu or mem),
    /// the rest folded into one `(other)` series with their sums and count; pinned names and
    /// alarming or near-threshold processes are always kept. 0 = off.
    #[arg(long, env = "PROCWATCH_GOVERNOR_TOP_K", default_value_t = 0, value_name = "N")]
    pub governor_top_k: usize,

    /// Process names (globs, comma-separated) the governor never folds.
    #[arg(long, env = "PROCWATCH_GOVERNOR_PINNED", value_delimiter = ',', value_name = "GLOBS")]
    pub governor_pinned: Vec<String>,

    /// Expected agent interval; a host is stale after 3 intervals without data.
    #[arg(long, env = "PROCWATCH_INTERVAL", default_value = "10s", value_parser = procwatch_model::duration::parse)]
    pub interval: Duration,

    /// The window of the seed routes ("the last 5 minutes") and default v1 usage window; also
    /// how far back the embedded store keeps samples in memory (at least 1 min; older ones are
    /// read from disk).
    #[arg(long, env = "PROCWATCH_WINDOW", default_value = "5m", value_parser = procwatch_model::duration::parse)]
    pub window: Duration,

    /// How far back the embedded store keeps samples in memory when that should be longer
    /// than `--window` (default: `--window`; at most 2 h): usage pages over windows up to it
    /// are answered from memory, at ≈ 8 bytes a quiet sample (a 10-minute window at 10 s:
    /// ≈ 250 bytes more a series than 5 minutes).
    #[arg(long, env = "PROCWATCH_MEMORY_WINDOW", value_parser = procwatch_model::duration::parse)]
    pub memory_window: Option<Duration>,

    /// How far the embedded store's in-memory floor moves at once: samples older than the
    /// memory window (`--window`, `--memory-window`) are folded to disk chunks in steps of this, so memory holds up to window +
    /// step (+ one maintenance period) a series. Shorter = less memory per series, more small
    /// chunks until the 2 h merge (10 s to 2 h).
    #[arg(long, env = "PROCWATCH_FOLD_STEP", default_value = "1m", value_parser = procwatch_model::duration::parse)]
    pub fold_step: Duration,

    /// Bearer token required on ingestion routes.
    #[arg(
        long,
        env = "PROCWATCH_WRITE_TOKEN",
        value_name = "T",
        hide_env_values = true,
        conflicts_with = "write_token_file"
    )]
    pub write_token: Option<Secret>,

    /// File holding the write token (surrounding whitespace ignored).
    #[arg(long, env = "PROCWATCH_WRITE_TOKEN_FILE", value_name = "FILE")]
    pub write_token_file: Option<PathBuf>,

    /// Bearer token required on query routes.
    #[arg(
        long,
        env = "PROCWATCH_READ_TOKEN",
        value_name = "T",
        hide_env_values = true,
        conflicts_with = "read_token_file"
    )]
    pub read_token: Option<Secret>,

    /// File holding the read token (surrounding whitespace ignored).
    #[arg(long, env = "PROCWATCH_READ_TOKEN_FILE", value_name = "FILE")]
    pub read_token_file: Option<PathBuf>,

    /// The admin token (steering agents: POST /api/v1/agents/directives); must differ from the
    /// write and read tokens. Without one, admin routes answer 403.
    #[command(flatten)]
    pub admin: super::token::AdminToken,

    /// Write the bound address to FILE once listening.
    #[arg(long, env = "PROCWATCH_ADDR_FILE", value_name = "FILE")]
    pub addr_file: Option<PathBuf>,

    /// InfluxDB base URL, for --store influxdb (1.x; 2.x/3.x through their v1 API).
    #[arg(long, env = "PROCWATCH_INFLUX_URL", value_name = "URL")]
    pub influx_url: Option<String>,

    /// InfluxDB database (2.x/3.x: the database name of a DBRP mapping).
    #[arg(long, env = "PROCWATCH_INFLUX_DB", default_value = "procwatch", value_name = "NAME")]
    pub influx_db: String,

    /// InfluxDB API token (2.x/3.x), sent as `Authorization: Token T`.
    #[arg(long, env = "PROCWATCH_INFLUX_TOKEN", value_name = "T", hide_env_values = true)]
    pub influx_token: Option<Secret>,

    /// InfluxDB retention policy, created with --retention and made the default [default:
    /// procwatch; on 2.x the database's default].
    #[arg(long, env = "PROCWATCH_INFLUX_RP", value_name = "NAME")]
    pub influx_rp: Option<String>,

    /// ClickHouse HTTP URL of one cluster node, for --store clickhouse (docs/scaling-out.md).
    #[arg(long, env = "PROCWATCH_CLICKHOUSE_URL", value_name = "URL")]
    pub clickhouse_url: Option<String>,

    /// ClickHouse cluster name (its `<remote_servers>` entry) for ON CLUSTER DDL and the
    /// Distributed tables.
    #[arg(
        long,
        env = "PROCWATCH_CLICKHOUSE_CLUSTER",
        default_value = "procwatch",
        value_name = "NAME"
    )]
    pub clickhouse_cluster: String,

    /// ClickHouse database procwatch creates and uses.
    #[arg(
        long,
        env = "PROCWATCH_CLICKHOUSE_DATABASE",
        default_value = "procwatch",
        value_name = "NAME"
    )]
    pub clickhouse_database: String,

    /// For --store clickhouse: how long a data INSERT waits for more batches to share it
    /// before it starts (humantime, e.g. 5ms; at most 100ms; 0s: each starts at once). Each
    /// batch's answer may come that much later; batches arriving together share one INSERT.
    #[arg(long, env = "PROCWATCH_CLICKHOUSE_INSERT_LINGER", default_value = "0s", value_parser = procwatch_model::duration::parse)]
    pub clickhouse_insert_linger: Duration,

    /// For --store clickhouse: the HTTP URLs of every shard's replicas, shards separated by
    /// `;` and in the order of the cluster's <remote_servers>, each shard's replicas by `,` in
    /// their order there (e.g. `http://ch1:8123,http://ch2:8123;http://ch3:8123,http://ch4:8123`).
    /// Set: a batch's data goes straight to its shard's local tables (the shard computed as the
    /// Distributed tables' cityHash64(host) does), one group commit per shard. Unset: through
    /// the Distributed tables on --clickhouse-url (docs/scaling-out.md).
    #[arg(long, env = "PROCWATCH_CLICKHOUSE_SHARD_URLS", value_name = "URLS", value_parser = parse_shard_urls)]
    pub clickhouse_shard_urls: Option<ShardUrls>,

    /// ZooKeeper of the ClickHouse cluster (HOST:PORT[,HOST:PORT...]), for --store clickhouse:
    /// servers sharing the cluster register there and split the alarm evaluation among the live
    /// ones, so each alarm fires once (docs/scaling-out.md). Unset: this server evaluates every
    /// host.
    #[arg(long, env = "PROCWATCH_CLUSTER_ZOOKEEPER", value_name = "HOST:PORT")]
    pub cluster_zookeeper: Option<String>,

    /// The ZooKeeper znode the servers of one cluster register under (one per cluster).
    #[arg(long, env = "PROCWATCH_CLUSTER_ROOT", default_value = "/procwatch", value_name = "PATH")]
    pub cluster_root: String,

    /// Serve on a non-loopback address without both tokens (anyone reaching the port may write
    /// and read).
    #[arg(long, env = "PROCWATCH_INSECURE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub insecure: bool,

    /// TLS certificate chain (PEM); with --tls-key the server speaks HTTPS only.
    #[arg(long, env = "PROCWATCH_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PROCWATCH_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest request body, on the wire and after gunzip (413 past it).
    #[arg(long, env = "PROCWATCH_MAX_BODY", default_value = "16MiB", value_parser = super::agent::ship::parse_size, value_name = "SIZE")]
    pub max_body: u64,

    /// Samples a batch at most (400 past it).
    #[arg(long, env = "PROCWATCH_MAX_SAMPLES", default_value_t = 100_000, value_name = "N")]
    pub max_samples: usize,

    /// A request running longer is answered 408.
    #[arg(long, env = "PROCWATCH_MAX_REQUEST_TIME", default_value = "30s", value_parser = procwatch_model::duration::parse, value_name = "DURATION")]
    pub max_request_time: Duration,

    /// A request head not received within this closes the connection (slow clients); also
    /// bounds a TLS handshake.
    #[arg(long, env = "PROCWATCH_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = procwatch_model::duration::parse, value_name = "DURATION")]
    pub header_read_timeout: Duration,

    /// Requests in flight at most (429 past it; health probes and alarm streams excepted).
    #[arg(
        long,
        env = "PROCWATCH_MAX_CONCURRENT_REQUESTS",
        default_value_t = 1024,
        value_name = "N"
    )]
    pub max_concurrent_requests: usize,

    /// Ingestion requests in flight at most (429 past it).
    #[arg(long, env = "PROCWATCH_MAX_INFLIGHT_WRITES", default_value_t = 64, value_name = "N")]
    pub max_inflight_writes: usize,

    /// Ingestion requests a second per write token (per peer IP without one); 0 = no limit.
    #[arg(long, env = "PROCWATCH_INGEST_RATE", default_value_t = 200.0, value_name = "PER_SECOND")]
    pub ingest_rate: f64,

    /// Ingestion requests a key may send at once after being idle.
    #[arg(long, env = "PROCWATCH_INGEST_BURST", default_value_t = 400, value_name = "N")]
    pub ingest_burst: u32,

    /// Host names (comma list) a loopback-bound server answers to besides localhost and
    /// loopback IPs; any other `Host` is 421 (DNS rebinding).
    #[arg(long, env = "PROCWATCH_ALLOWED_HOSTS", value_delimiter = ',', value_name = "NAMES")]
    pub allowed_hosts: Vec<String>,

    /// A connection with no request in flight and no byte moving for this long is closed.
    #[arg(long, env = "PROCWATCH_IDLE_TIMEOUT", default_value = "60s", value_parser = procwatch_model::duration::parse, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Open connections at most; a few more are served one short request each (health
    /// checks), the rest are closed at once. Keep it under the fd limit (ulimit -n).
    #[arg(long, env = "PROCWATCH_MAX_CONNECTIONS", default_value_t = 1000, value_name = "N")]
    pub max_connections: usize,

    /// Alarm streams (SSE) open at once at most (503 past it).
    #[arg(long, env = "PROCWATCH_MAX_STREAMS", default_value_t = 64, value_name = "N")]
    pub max_streams: usize,

    /// Request body bytes held by all ingestion requests together, on the wire and after
    /// gunzip (429 past it; at least twice --max-body is used).
    #[arg(long, env = "PROCWATCH_MAX_INFLIGHT_BYTES", default_value = "64MiB", value_parser = super::agent::ship::parse_size, value_name = "SIZE")]
    pub max_inflight_bytes: u64,

    /// A chart not drawn within this is answered 503.
    #[arg(long, env = "PROCWATCH_RENDER_TIMEOUT", default_value = "5s", value_parser = procwatch_model::duration::parse, value_name = "DURATION")]
    pub render_timeout: Duration,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// Acknowledged batches survive power loss (fsync before the answer, group commit).
    Durable,
    /// Acknowledged batches survive a kill of the server, not a power cut.
    Relaxed,
}

/// The embedded store's options from the flags.
/// `--clickhouse-shard-urls`: every shard's replica URLs, shards split by `;`, replicas by `,`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardUrls(pub Vec<Vec<String>>);

fn parse_shard_urls(s: &str) -> Result<ShardUrls, String> {
    let shards: Vec<Vec<String>> = s
        .split(';')
        .map(|shard| shard.split(',').map(|u| u.trim().to_string()).collect::<Vec<_>>())
        .collect();
    for (i, urls) in shards.iter().enumerate() {
        if let Some(u) =
            urls.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
        {
            return Err(format!("shard {}: {u:?} is not an http(s) URL", i + 1));
        }
    }
    Ok(ShardUrls(shards))
}

pub fn sqlite_options(args: &ServerArgs) -> SqliteOptions {
    let mut opts = SqliteOptions {
        retention_ms: args.retention.as_millis() as i64,
        rollup_retention_ms: args.rollup_retention.as_millis() as i64,
        durability: match args.durability {
            DurabilityArg::Durable => Durability::Power,
            DurabilityArg::Relaxed => Durability::Process,
        },
        // The head holds what the hot queries read (the query window) and what the alarm
        // evaluator reads incrementally; a longer default only cost memory per series
        // (BENCHMARKS.md, "Memory per active series").
        // `--memory-window` only ever lengthens it: the alarm evaluator and the seed routes
        // read `--window` from memory.
        memory_window_ms: args
            .memory_window
            .unwrap_or(args.window)
            .min(Duration::from_secs(7200))
            .max(args.window)
            .max(Duration::from_secs(60))
            .as_millis() as i64,
        // 1 min, not the library's 5: at 10 s a series holds ≈ 44 samples instead of ≈ 68
        // (BENCHMARKS.md, "Memory per active series", Session 6).
        fold_step_ms: args
            .fold_step
            .clamp(Duration::from_secs(10), Duration::from_secs(7200))
            .as_millis() as i64,
        ..SqliteOptions::default()
    };
    if let Some(w) = args.time_warp {
        opts.clock = w.clock();
        opts.maintenance_interval = w.real(opts.maintenance_interval);
    }
    opts
}

/// Which backend holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Embedded SQLite in --data-dir (default).
    Sqlite,
    /// An external InfluxDB.
    Influxdb,
    /// A sharded, replicated ClickHouse cluster (docs/scaling-out.md).
    Clickhouse,
    /// In memory, gone at exit (tests and demos; --data-dir is unused).
    Memory,
}

/// A token: its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

fn token(given: Option<Secret>, file: Option<&Path>, what: &str) -> Result<Option<String>> {
    let token = match (given, file) {
        (Some(s), _) => s.0,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} token file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        bail!("the {what} token is empty");
    }
    Ok(Some(token))
}

/// Opens the storage backend chosen by `--store`.
pub async fn open_store(args: &ServerArgs) -> Result<Arc<dyn Storage>> {
    match args.store {
        StoreKind::Sqlite => {
            let opts = sqlite_options(args);
            tracing::info!(
                message = "Opening the embedded store.",
                dir = %args.data_dir.display(),
                durability = ?opts.durability
            );
            let dir = args.data_dir.clone();
            // Opening folds what a crash left and rebuilds the recent window: blocking work.
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, opts))
                .await?
                .with_context(|| {
                format!("cannot open the store in {}", args.data_dir.display())
            })?;
            Ok(Arc::new(store))
        }
        StoreKind::Influxdb => {
            let Some(url) = &args.influx_url else {
                bail!("--store influxdb needs --influx-url (e.g. http://127.0.0.1:8086)");
            };
            let mut cfg = procwatch_store_influx::InfluxConfig::new(url, &args.influx_db);
            cfg.token = args.influx_token.as_ref().map(|t| t.0.clone());
            cfg.rp = args.influx_rp.clone();
            cfg.retention = args.retention;
            let store = procwatch_store_influx::InfluxStore::connect(cfg)
                .await
                .context("cannot open the influxdb store")?;
            Ok(Arc::new(store))
        }
        StoreKind::Clickhouse => {
            let Some(url) = &args.clickhouse_url else {
                bail!("--store clickhouse needs --clickhouse-url (e.g. http://127.0.0.1:8123)");
            };
            let mut cfg = procwatch_store_clickhouse::ClickHouseConfig::new(
                url,
                &args.clickhouse_cluster,
                &args.clickhouse_database,
            );
            cfg.insert_linger = args.clickhouse_insert_linger;
            cfg.shard_urls = args.clickhouse_shard_urls.clone().map(|u| u.0).unwrap_or_default();
            let store = procwatch_store_clickhouse::ClickHouseStore::connect(cfg)
                .await
                .context("cannot open the clickhouse store")?;
            Ok(Arc::new(store))
        }
        StoreKind::Memory => Ok(Arc::new(procwatch_store::memory::MemoryStore::new())),
    }
}

/// True when `listen` (`ADDR:PORT`, `localhost:PORT`, `[::1]:PORT`) only accepts local peers.
pub fn is_loopback_listen(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `--insecure` rule: a non-loopback listen address needs both tokens.
pub fn check_exposure(
    listen: &str,
    write_token: bool,
    read_token: bool,
    insecure: bool,
) -> Result<()> {
    if insecure || is_loopback_listen(listen) || (write_token && read_token) {
        return Ok(());
    }
    let missing: Vec<&str> = [(!write_token, "--write-token"), (!read_token, "--read-token")]
        .into_iter()
        .filter_map(|(m, name)| m.then_some(name))
        .collect();
    bail!(
        "refusing to listen on {listen} (not loopback) without {}: anyone reaching it could \
         write and read; set the token(s) (or their *_FILE / PROCWATCH_* forms) or pass \
         --insecure",
        missing.join(" and ")
    )
}

/// The library's settings from the flags (tokens read, alarm rules from the config file, TLS
/// loaded, limits, the `--insecure` rule checked); shared with `procwatch up`.
pub fn server_config(args: &ServerArgs) -> Result<ServerConfig> {
    let write_token = token(args.write_token.clone(), args.write_token_file.as_deref(), "write")?;
    let read_token = token(args.read_token.clone(), args.read_token_file.as_deref(), "read")?;
    let admin_token = args.admin.resolve()?;
    if let Some(a) = &admin_token {
        if write_token.as_ref() == Some(a) || read_token.as_ref() == Some(a) {
            bail!("the admin token must differ from the write and read tokens: whoever holds those could steer every agent");
        }
    }
    let writes_need_token = write_token.is_some() || args.host_tokens.is_some();
    check_exposure(&args.listen, writes_need_token, read_token.is_some(), args.insecure)?;
    if args.rollup_retention < args.retention {
        bail!(
            "--rollup-retention ({}) must be at least --retention ({}): roll-ups summarise the raw samples before they go",
            humantime::format_duration(args.rollup_retention),
            humantime::format_duration(args.retention)
        );
    }
    super::cluster::check(args)?;
    if args.retention_interval.is_zero() {
        bail!("--retention-interval must be more than 0");
    }
    if args.max_body == 0 || args.max_samples == 0 {
        bail!("--max-body and --max-samples must be more than 0");
    }
    if args.max_concurrent_requests == 0 || args.max_inflight_writes == 0 {
        bail!("--max-concurrent-requests and --max-inflight-writes must be more than 0");
    }
    if args.max_connections == 0 || args.max_streams == 0 || args.max_inflight_bytes == 0 {
        bail!("--max-connections, --max-streams and --max-inflight-bytes must be more than 0");
    }
    if args.idle_timeout.is_zero() || args.render_timeout.is_zero() {
        bail!("--idle-timeout and --render-timeout must be more than 0");
    }
    if !(args.ingest_rate >= 0.0 && args.ingest_rate.is_finite()) {
        bail!("--ingest-rate must be a finite number, 0 or more");
    }
    if args.governor_top_k > procwatch_server::governor::MAX_TOP_K {
        bail!(
            "--governor-top-k {} is over {}",
            args.governor_top_k,
            procwatch_server::governor::MAX_TOP_K
        );
    }
    let pinned = args
        .governor_pinned
        .iter()
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
        .map(|g| {
            procwatch_alarm::Glob::parse(g)
                .map_err(|e| anyhow::anyhow!("--governor-pinned {g:?}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let host_tokens = match &args.host_tokens {
        Some(path) => {
            let t = procwatch_server::admission::HostTokens::load(path)?;
            if t.is_empty() {
                bail!("the host token file {} names no host", path.display());
            }
            if admin_token.as_ref().is_some_and(|a| t.host_of(a.as_bytes()).is_some()) {
                bail!("the admin token must differ from every host token in {}", path.display());
            }
            Some(Arc::new(t))
        }
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            procwatch_server::serve::tls_config(cert, key).context("cannot load the TLS files")?,
        ),
        _ => None,
    };
    Ok(ServerConfig {
        retention: args.retention,
        retention_interval: args.retention_interval,
        interval: args.interval,
        query_window: args.window,
        write_token,
        read_token,
        admin_token,
        alarm_rules: super::alarm::rules_from_config()?,
        max_body_bytes: usize::try_from(args.max_body).unwrap_or(usize::MAX),
        max_samples: args.max_samples,
        request_timeout: args.max_request_time,
        header_read_timeout: args.header_read_timeout,
        max_concurrent_requests: args.max_concurrent_requests,
        max_inflight_writes: args.max_inflight_writes,
        ingest_rate: args.ingest_rate,
        ingest_burst: args.ingest_burst,
        tls,
        clock: args.time_warp.map_or_else(procwatch_model::clock::system, |w| w.clock()),
        allowed_hosts: args
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect(),
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        max_streams: args.max_streams,
        max_inflight_bytes: usize::try_from(args.max_inflight_bytes).unwrap_or(usize::MAX),
        render_timeout: args.render_timeout,
        host_tokens,
        host_tokens_only: args.host_tokens_only,
        series_limits: procwatch_server::admission::SeriesLimits {
            per_batch: args.max_series_per_batch,
            per_host: args.max_series_per_host,
            total: args.max_series_total,
        },
        governor: procwatch_server::governor::GovernorConfig::new(args.governor_top_k, pinned),
        // Set once the listener is bound (its address goes into ZooKeeper): `cluster::join`.
        ownership: None,
    })
}

/// At most this many glibc malloc arenas. glibc makes up to 8 per core, each keeping its own
/// free memory: under the ingest and query threads of a large fleet they held a third of the
/// server's RSS (BENCHMARKS.md, "Memory per active series"). Two keep contention low on the
/// few threads that allocate at once; `MALLOC_ARENA_MAX` in the environment still wins.
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas, before any thread starts (see [`MALLOC_ARENAS`]).
#[allow(unsafe_code)]
pub(super) fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// How often the server hands glibc's free memory back to the kernel (`malloc_trim`).
const MALLOC_TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Every [`MALLOC_TRIM_EVERY`], returns the pages glibc holds free inside its heaps to the
/// kernel. An evaluation pass or a burst of ingestion frees as much as it allocated, but glibc
/// returns only the free memory at the top of a heap: at 300,000 series, 230 MB of the server's
/// 2.0 GB RSS was free memory held this way (`malloc_trim(0)` through gdb; BENCHMARKS.md,
/// "Memory per active series → Session 8"). A trim walks the heaps' free lists (a few ms to a
/// few hundred at that size), on a blocking thread, and records glibc's account of the heap
/// after it ([`trim_and_account`]).
pub(super) fn spawn_malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut every = tokio::time::interval(MALLOC_TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: a reading of the heap is there from the start.
        loop {
            every.tick().await;
            if tokio::task::spawn_blocking(trim_and_account).await.is_err() {
                return;
            }
        }
    });
}

/// One trim, then glibc's account of the heap for `/metrics` (`procwatch_server::heap_stats`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_and_account() {
    // SAFETY: malloc_trim only releases free pages of glibc's own heaps; mallinfo2 only reads
    // the allocator's counters (under its own locks).
    let info = unsafe {
        libc::malloc_trim(0);
        libc::mallinfo2()
    };
    let in_use = info.uordblks as u64 + info.hblkhd as u64;
    procwatch_server::heap_stats::record(in_use, info.fordblks as u64);
}

pub fn run(args: ServerArgs) -> Result<()> {
    cap_malloc_arenas();
    let mut config = server_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("procwatch-server")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        // Before the address file and the "Serving." line announce readiness.
        let shutdown = super::signal::Shutdown::install()?;
        spawn_malloc_trim();
        // Bind first: a port in use must not leave a fresh data directory behind.
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let store = open_store(&args).await?;
        let addr = listener.local_addr()?;
        if let Some(path) = &args.addr_file {
            // Written whole then renamed, so a reader never sees half an address.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, addr.to_string())
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot write the address file {}", path.display()))?;
        }
        let membership = super::cluster::join(&args, addr)?;
        config.ownership =
            membership.clone().map(|m| m as Arc<dyn procwatch_server::ownership::Ownership>);
        let shutdown = async move {
            shutdown.wait().await;
            tracing::info!(message = "Shutting down: finishing requests in flight.");
        };
        let served = procwatch_server::run(listener, config, store, shutdown).await;
        if let Some(m) = membership {
            // The others take this server's hosts over at once.
            m.0.leave().await;
        }
        served.context("server failed")
    })
}

#[cfg(test)]
mod tests;
