//! The opt-in extra metrics (issue 19) in `/metrics`: for each (host, process) the cardinality
//! cap of [`crate::metrics`] kept (the same rows: no new series past the cap), the newest
//! value in the query window of each extra the agent sends:
//! `procwatch_process_read_bytes_per_second`, `procwatch_process_write_bytes_per_second`,
//! `procwatch_process_fds`, `procwatch_process_fds_limit_percent`, `procwatch_process_threads`,
//! `procwatch_process_ctxsw_voluntary_per_second`,
//! `procwatch_process_ctxsw_involuntary_per_second` (labels `host`, `process`), and
//! `procwatch_process_unit_info` (labels `host`, `process`, `unit`, `owner`; value 1).
//! Series without extras export none of these.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use procwatch_store::extras;
use procwatch_store::UsageQuery;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::ProcessRow;
use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    host: String,
    process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    host: String,
    process: String,
    unit: String,
    owner: String,
}

/// (extra, metric name, help).
const EXPORTED: [(&str, &str, &str); 7] = [
    ("read_bps", "process_read_bytes_per_second", "Bytes read from storage per second by the process group (newest, opt-in extra io)"),
    ("write_bps", "process_write_bytes_per_second", "Bytes written to storage per second by the process group (newest, opt-in extra io)"),
    ("fds", "process_fds", "Open file descriptors of the process group (newest, opt-in extra fds)"),
    ("fds_pct", "process_fds_limit_percent", "Highest share of its soft open-files limit any process of the group uses, percent (opt-in extra fds)"),
    ("threads", "process_threads", "Threads of the process group (newest, opt-in extra threads)"),
    ("ctxsw_vol", "process_ctxsw_voluntary_per_second", "Voluntary context switches per second (newest, opt-in extra ctxsw)"),
    ("ctxsw_invol", "process_ctxsw_involuntary_per_second", "Involuntary context switches per second (newest, opt-in extra ctxsw)"),
];

/// The extras exposition text for the exported (kept) rows; empty when none has extras.
pub async fn text(st: &AppState, kept: &[ProcessRow]) -> String {
    let now = st.config.clock.now_ms();
    let q = UsageQuery {
        from: now - st.config.query_window.as_millis() as i64,
        to: now + procwatch_model::validate::MAX_FUTURE_MS + 1,
        host: None,
        process: None,
        per_host: true,
    };
    let Ok(records) = st.store.extras_window(&q).await else { return String::new() };
    if records.is_empty() {
        return String::new();
    }
    let keep: HashSet<(&str, &str)> =
        kept.iter().map(|r| (r.host.as_str(), r.process.as_str())).collect();
    let mut registry = Registry::with_prefix("procwatch");
    let families: Vec<Family<Labels, Gauge<f64, AtomicU64>>> =
        EXPORTED.iter().map(|_| Family::default()).collect();
    let info: Family<InfoLabels, Gauge> = Family::default();
    for u in extras::usage(&records, true) {
        let host = u.host.clone().unwrap_or_default();
        if !keep.contains(&(host.as_str(), u.process.as_str())) {
            continue;
        }
        let l = Labels { host: host.clone(), process: u.process.clone() };
        for ((name, _, _), fam) in EXPORTED.iter().zip(&families) {
            if let Some(s) = u.metrics.get(*name) {
                fam.get_or_create(&l).set(s.last);
            }
        }
        if u.unit.is_some() || u.owner.is_some() {
            let il = InfoLabels {
                host,
                process: u.process.clone(),
                unit: u.unit.clone().unwrap_or_default(),
                owner: u.owner.clone().unwrap_or_default(),
            };
            info.get_or_create(&il).set(1);
        }
    }
    for ((_, name, help), fam) in EXPORTED.iter().zip(families) {
        registry.register(*name, *help, fam);
    }
    registry.register(
        "process_unit_info",
        "The systemd unit or container and the owner of the process group (opt-in extras unit, owner)",
        info,
    );
    let mut out = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}
