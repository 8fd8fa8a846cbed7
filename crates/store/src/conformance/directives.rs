//! The control channel's directive log: kept whole, listed by version, replaced by version,
//! untouched by retention.

use procwatch_model::directive::{DirectiveRecord, SettingsChange};

use super::base_ts;
use crate::Storage;

/// Directives come back in version order with every field, a version put again replaces the
/// record, and retention (even past their `at`) leaves them.
pub async fn directives(store: &dyn Storage) {
    assert_eq!(store.directives().await.expect("directives"), Vec::new());
    let t = base_ts();
    let rec = |version: u64, hosts: &str, set: SettingsChange| DirectiveRecord {
        version,
        at: t + version as i64,
        who: "admin".into(),
        hosts: hosts.into(),
        set,
    };
    let a = rec(2, "web-*", SettingsChange { interval: Some("5s".into()), ..Default::default() });
    let b = rec(
        1,
        "*",
        SettingsChange {
            include: Some(vec!["nginx*".into(), "postgres".into()]),
            metrics: Some(vec!["io".into()]),
            paused: Some(false),
            ..Default::default()
        },
    );
    let c = rec(3, "db-1", SettingsChange { sweep_now: Some(true), ..Default::default() });
    for r in [&a, &b, &c] {
        store.put_directive(r).await.expect("put_directive");
    }
    let got = store.directives().await.expect("directives");
    assert_eq!(got, vec![b.clone(), a.clone(), c.clone()], "by version, every field");
    let c2 = DirectiveRecord { who: "other".into(), ..c.clone() };
    store.put_directive(&c2).await.expect("replace");
    store.apply_retention(t + 3_600_000).await.expect("retention");
    let got = store.directives().await.expect("directives");
    assert_eq!(got, vec![b, a, c2], "replaced by version, kept past retention");
}
