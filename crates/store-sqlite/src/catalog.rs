//! The catalog: hosts (state, seq bookkeeping, retirement) and their series ids.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use procwatch_model::{HostTotal, TsMs};
use procwatch_store::host_book::HostBook;
use procwatch_store::{HostInfo, StoreError, StoreResult};
use rusqlite::{params, Connection, OptionalExtension};

use crate::index::HostIndex;
use crate::inner::Inner;
use crate::schema::db_err;

pub(crate) struct HostEntry {
    pub(crate) name: String,
    pub(crate) id: u32,
    pub(crate) state: Mutex<HostBook>,
    pub(crate) index: RwLock<HostIndex>,
    pub(crate) series: RwLock<HashMap<String, u32>>,
}

#[derive(Default)]
pub(crate) struct Catalog {
    pub(crate) hosts: BTreeMap<String, Arc<HostEntry>>,
    pub(crate) by_id: HashMap<u32, Arc<HostEntry>>,
    /// series id → (host id, process)
    pub(crate) series: HashMap<u32, (u32, String)>,
    /// Retired hosts (`retired_hosts`): hidden from `hosts()` while `last_seen` ≤ this.
    pub(crate) retired: HashMap<String, TsMs>,
}

/// One series selected by a query.
pub(crate) struct Sel {
    pub(crate) host: Arc<HostEntry>,
    pub(crate) process: String,
    pub(crate) sid: u32,
}

pub(crate) fn load_catalog(conn: &Connection, floor: TsMs) -> StoreResult<Catalog> {
    let mut cat = Catalog::default();
    let mut stmt = conn
        .prepare("SELECT id, name, last_seen, interval_ms, last_seq, seq_gaps, dropped FROM hosts")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (id, name, last_seen, interval, last_seq, gaps, dropped) = row.map_err(db_err)?;
        let latest = conn
            .query_row(
                "SELECT ts, cpu, mem, unattributed FROM host_totals WHERE host_id = ?1 ORDER BY ts DESC LIMIT 1",
                [id],
                |r| Ok(HostTotal { ts: r.get(0)?, cpu: r.get(1)?, mem: r.get(2)?, unattributed_cpu: r.get(3)? }),
            )
            .optional()
            .map_err(db_err)?;
        let entry = Arc::new(HostEntry {
            name: name.clone(),
            id,
            state: Mutex::new(HostBook {
                last_seen,
                interval_ms: interval as u64,
                seq: last_seq.map(|s| (s as u64, gaps as u64)),
                dropped_samples: dropped as u64,
                latest,
            }),
            index: RwLock::new(HostIndex::new(floor)),
            series: RwLock::new(HashMap::new()),
        });
        cat.by_id.insert(id, entry.clone());
        cat.hosts.insert(name, entry);
    }
    let mut stmt = conn.prepare("SELECT name, at FROM retired_hosts").map_err(db_err)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err)?;
    for row in rows {
        let (name, at): (String, TsMs) = row.map_err(db_err)?;
        cat.retired.insert(name, at);
    }
    let mut stmt = conn.prepare("SELECT id, host_id, process FROM series").map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?, r.get::<_, String>(2)?)))
        .map_err(db_err)?;
    for row in rows {
        let (sid, hid, process) = row.map_err(db_err)?;
        if let Some(h) = cat.by_id.get(&hid) {
            h.series.write().insert(process.clone(), sid);
        }
        cat.series.insert(sid, (hid, process));
    }
    Ok(cat)
}

impl Inner {
    /// The series a query selects, sorted by (host, process).
    pub(crate) fn select(&self, host: Option<&str>, process: Option<&str>) -> Vec<Sel> {
        let cat = self.catalog.read();
        let hosts: Vec<Arc<HostEntry>> = match host {
            Some(h) => cat.hosts.get(h).cloned().into_iter().collect(),
            None => cat.hosts.values().cloned().collect(),
        };
        drop(cat);
        let mut out = Vec::new();
        for h in hosts {
            let ser = h.series.read();
            match process {
                Some(p) => {
                    if let Some(&sid) = ser.get(p) {
                        out.push(Sel { host: h.clone(), process: p.to_string(), sid });
                    }
                }
                None => {
                    let mut all: Vec<(&String, &u32)> = ser.iter().collect();
                    all.sort_unstable();
                    for (p, &sid) in all {
                        out.push(Sel { host: h.clone(), process: p.clone(), sid });
                    }
                }
            }
        }
        out
    }

    pub(crate) fn hosts(&self) -> Vec<HostInfo> {
        let rfloor = self.retention_floor.load(Ordering::SeqCst);
        let (hosts, retired): (Vec<Arc<HostEntry>>, HashMap<String, TsMs>) = {
            let cat = self.catalog.read();
            (cat.hosts.values().cloned().collect(), cat.retired.clone())
        };
        hosts
            .iter()
            .filter_map(|h| {
                let st = h.state.lock();
                let listed = st.last_seen >= rfloor
                    && st.seq.is_some()
                    && retired.get(&h.name).is_none_or(|at| st.last_seen > *at);
                listed.then(|| st.info(&h.name))
            })
            .collect()
    }

    pub(crate) fn retire_host(&self, host: &str, at: TsMs) -> StoreResult<TsMs> {
        let Some(last_seen) =
            self.hosts().into_iter().find(|h| h.host == host).map(|h| h.last_seen)
        else {
            return Err(StoreError::NotFound(format!("host {host:?}")));
        };
        let at = at.max(last_seen);
        let w = self.writer.lock();
        w.conn
            .prepare_cached("INSERT OR REPLACE INTO retired_hosts(name, at) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![host, at]))
            .map_err(db_err)?;
        self.catalog.write().retired.insert(host.to_owned(), at);
        Ok(last_seen)
    }
}
