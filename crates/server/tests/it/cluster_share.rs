//! Several servers on one store with an `Ownership` (the cluster membership, faked here):
//! each evaluates only the hosts rendezvous hashing gives it, a server that takes a host over
//! continues its open RED (restored from the store, same id) without delivering anything
//! twice, and a server without a share does not evaluate and says so.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procwatch_model::{AlarmEvent, Level};
use procwatch_server::ownership::{Evaluation, Ownership, Share};
use procwatch_server::{rendezvous, AppState, ServerConfig};
use procwatch_store::memory::MemoryStore;
use procwatch_store::Storage;

use crate::util::{batch, now_ms, sample};

/// The live members (shared by every fake), or `None` for "ZooKeeper unreachable".
type Members = Arc<Mutex<Option<Vec<String>>>>;

struct Fake {
    me: String,
    members: Members,
}

impl Ownership for Fake {
    fn share(&self) -> Result<Share, String> {
        let members = self.members.lock().unwrap().clone().ok_or("ZooKeeper unreachable")?;
        Ok(Share { term: 1, me: self.me.clone(), members })
    }
}

fn server(store: &Arc<MemoryStore>, me: &str, members: &Members) -> AppState {
    let ownership: Arc<dyn Ownership> = Arc::new(Fake { me: me.into(), members: members.clone() });
    let config = ServerConfig {
        interval: Duration::from_secs(1),
        ownership: Some(ownership),
        ..ServerConfig::default()
    };
    AppState::new(store.clone(), config)
}

fn reds(events: &[AlarmEvent]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.level == Level::Red && e.end.is_none())
        .map(|e| e.host.clone())
        .collect()
}

#[tokio::test]
async fn each_server_evaluates_its_share_and_takes_a_dead_ones_over() {
    let store = Arc::new(MemoryStore::new());
    let ids = vec!["member-1".to_owned(), "member-2".to_owned()];
    let members: Members = Arc::new(Mutex::new(Some(ids.clone())));
    let (a, b) = (server(&store, "member-1", &members), server(&store, "member-2", &members));
    let hosts: Vec<String> = (0..12).map(|i| format!("web-{i}")).collect();
    let t0 = now_ms() / 1000 * 1000 - 20_000;
    let mut seq = 0;
    let mut write = |s: i64| {
        seq += 1;
        let ts = t0 + s * 1_000;
        let batches: Vec<_> =
            hosts.iter().map(|h| batch(h, seq, vec![sample(ts, "java", 95.0, 1.0)])).collect();
        let store = store.clone();
        async move {
            for b in batches {
                store.write_batch(&b).await.unwrap();
            }
        }
    };
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for s in 0..5 {
        write(s).await;
        from_a.extend(a.alarms.evaluate(&a, t0 + s * 1_000 + 500).await.unwrap());
        from_b.extend(b.alarms.evaluate(&b, t0 + s * 1_000 + 500).await.unwrap());
    }
    // Each host RED once, on its owner.
    let owner = |h: &str| rendezvous::owner(h, &ids).unwrap().to_owned();
    let (ra, rb) = (reds(&from_a), reds(&from_b));
    assert!(ra.iter().all(|h| owner(h) == "member-1"), "{ra:?}");
    assert!(rb.iter().all(|h| owner(h) == "member-2"), "{rb:?}");
    assert_eq!(ra.len() + rb.len(), hosts.len());
    assert!(!ra.is_empty() && !rb.is_empty(), "both own some of 12 hosts");
    match a.alarms.evaluation() {
        Evaluation::Share { members: 2, hosts_owned, hosts: 12, .. } => {
            assert_eq!(hosts_owned, ra.len())
        }
        other => panic!("{other:?}"),
    }
    let open_before: BTreeSet<String> = store
        .alarm_events(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.end.is_none())
        .map(|e| e.id)
        .collect();

    // A dies: B owns everything, continues A's REDs (same ids), raises nothing.
    *members.lock().unwrap() = Some(vec!["member-2".into()]);
    for s in 5..8 {
        write(s).await;
        let evs = b.alarms.evaluate(&b, t0 + s * 1_000 + 500).await.unwrap();
        assert!(evs.is_empty(), "B delivered again after the takeover: {evs:?}");
    }
    let active: BTreeSet<String> = b.alarms.active().into_iter().map(|e| e.id).collect();
    assert_eq!(active, open_before, "B continues every open RED");

    // No share: no pass, and it says why.
    *members.lock().unwrap() = None;
    write(8).await;
    assert!(b.alarms.evaluate(&b, t0 + 8_500).await.unwrap().is_empty());
    assert!(
        matches!(b.alarms.evaluation(), Evaluation::Paused { reason } if reason.contains("ZooKeeper"))
    );
}
