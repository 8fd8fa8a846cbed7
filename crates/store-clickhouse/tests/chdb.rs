//! The store's DDL (its single-node equivalent) and every query shape of `sql`, run on a
//! **current** ClickHouse release, embedded in the `chdb` PyPI package, through
//! `tests/helpers/chdb_check.py`: the SQL must stay valid on both 18.16 (the cluster tests)
//! and today's releases. `SKIPPED` when python3 or chdb is missing (`pip install chdb`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use procwatch_store_clickhouse::{schema, sql};

/// `sql` with each `?` replaced by the next literal.
fn bind(sql: &str, values: &[&str]) -> String {
    let mut parts = sql.split('?');
    let mut out = parts.next().unwrap_or_default().to_string();
    for (part, v) in parts.zip(values.iter().chain(std::iter::repeat(&"?"))) {
        out.push_str(v);
        out.push_str(part);
    }
    out
}

fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

#[test]
fn ddl_and_query_shapes_run_on_a_current_clickhouse() {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/chdb_check.py");
    let db = "chk";
    let day0 = 1_764_892_800_000i64; // 2025-12-05T00:00:00Z, a day start
    let ts = |d: i64| (day0 + d).to_string();
    let mut stmts = schema::ddl(None, db);
    // Two versions of one key (the later wins under FINAL), a second series, an old day.
    stmts.push(format!(
        "INSERT INTO {db}.samples VALUES ('h1', 'java', {a}, 1.5, 0.03, 2.5, 1000, 1, 1), \
         ('h1', 'java', {a}, 9.5, 0.19, 3.5, 2000, 2, 2), ('h1', 'nginx', {b}, 1, 0.02, 1, 10, 4, 1), \
         ('h2', 'java', {old}, 5, 0.1, 5, 50, 1, 1), ('h1', '', {b}, 42, 0.5, 51, 0, 1, 3)",
        a = ts(1_000),
        b = ts(2_000),
        old = ts(-86_400_000)
    ));
    stmts.push(format!(
        "INSERT INTO {db}.host_totals VALUES ('h1', {a}, 40, 50, 0, 0, 1), ('h1', {a}, 41, 50, 2.5, 1, 2)",
        a = ts(1_000)
    ));
    stmts.push(format!(
        "INSERT INTO {db}.hosts VALUES ('h1', '{{\"last_seen\":1}}', 1), ('h1', '{{\"last_seen\":2}}', 2)"
    ));
    stmts.push(format!(
        "INSERT INTO {db}.alarm_events VALUES ('e1', 'h1', {a}, 0, '{{\"id\":\"e1\",\"end\":{a}}}', 1)",
        a = ts(1_000)
    ));
    stmts.push(format!("INSERT INTO {db}.meta VALUES ('retention_floor', 0, 1)"));
    stmts.push(format!(
        "INSERT INTO {db}.directives VALUES (1, 5, '{{\"version\":1}}', 1), (1, 5, '{{\"version\":1,\"who\":\"b\"}}', 2)"
    ));
    // The query shapes, each with its expected TSV where it says something.
    let lo = ts(0);
    let hi = ts(60_000);
    let checks: Vec<(String, Option<String>)> = vec![
        (
            bind(&sql::samples_window(db, true, true), &[&lo, &hi, "'h1'", "'java'"]),
            // FINAL keeps the newest version (2) of the key.
            Some(format!("h1\tjava\t{}\t9.5\t0.19\t3.5\t2000\t2\t2\n", ts(1_000))),
        ),
        (bind(&sql::samples_window(db, false, false), &[&lo, &hi]), None),
        (
            // Not the host total (process ''), which shares the table.
            bind(&sql::samples_window(db, true, false), &[&lo, &hi, "'h1'"]),
            Some(format!(
                "h1\tjava\t{a}\t9.5\t0.19\t3.5\t2000\t2\t2\nh1\tnginx\t{b}\t1\t0.02\t1\t10\t4\t1\n",
                a = ts(1_000),
                b = ts(2_000)
            )),
        ),
        (
            bind(&sql::usage(db, true, true, true), &[&lo, &hi, "'h1'", "'java'"]),
            Some(format!(
                "h1\tjava\t1\t{}\t2\t{}\n",
                ts(1_000),
                ["9.5", "0.19", "3.5", "2000"].map(|v| [v; 5].join("\t")).join("\t")
            )),
        ),
        (bind(&sql::usage(db, false, true, false), &[&lo, &hi, "'h1'"]), None),
        (bind(&sql::series_known(db), &["'h1'", "'nginx'", "0"]), Some("1\n".into())),
        (
            // The legacy table's newest version and the row in `samples`, by ts.
            bind(&sql::host_totals(db), &["'h1'", &lo, &hi, "'h1'", &lo, &hi]),
            Some(format!(
                "h1\t{}\t41\t50\t2.5\t1\t2\nh1\t{}\t42\t51\t0.5\t1\t3\n",
                ts(1_000),
                ts(2_000)
            )),
        ),
        (bind(&sql::host_state(db), &["'h1'"]), Some("{\"last_seen\":2}\n".into())),
        (sql::hosts(db), Some("h1\t{\"last_seen\":2}\n".into())),
        (
            bind(&sql::alarm_events(db, true, true, true, true), &["'h1'", &lo, &hi]),
            Some(String::new()),
        ),
        (bind(&sql::alarm_events(db, false, false, false, false), &[]), None),
        (sql::retention_floor(db), Some("0\n".into())),
        (sql::directives(db), Some("1\t5\t{\"version\":1,\"who\":\"b\"}\t2\n".into())),
        (bind(&sql::retention_count(db), &["0", &lo]), Some("1\n".into())),
        (bind(&sql::old_days(db, "samples"), &[&lo]), Some("2025-12-04\n".into())),
        (sql::drop_day(db, "samples", None, "2025-12-04"), None),
        // The old day is gone; the two versions of one key inserted in one block were
        // already collapsed at insert by the ReplacingMergeTree.
        (format!("SELECT count() FROM {db}.samples"), Some("3\n".into())),
        (sql::delete_old_alarms(db, day0), None),
        (bind(sql::READONLY_REPLICAS, &["'chk'"]), Some("0\n".into())),
    ];
    stmts.extend(checks.iter().map(|(s, _)| s.clone()));
    let input = serde_json::to_string(&stmts).expect("statements as JSON");
    let child = Command::new("python3")
        .arg(&helper)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        skipped("python3 not found (chdb check of the ClickHouse SQL on a current release)");
        return;
    };
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write statements");
    let out = child.wait_with_output().expect("chdb helper");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        skipped(&format!("{} (chdb check of the ClickHouse SQL)", stderr.trim()));
        return;
    }
    assert!(out.status.success(), "chdb helper failed:\n{stderr}");
    let results = parse_string_list(&String::from_utf8_lossy(&out.stdout));
    // results[0] is the version; then one per statement.
    let version = &results[0];
    let n_setup = stmts.len() - checks.len();
    for (i, (sql, want)) in checks.iter().enumerate() {
        if let Some(want) = want {
            assert_eq!(&results[1 + n_setup + i], want, "on ClickHouse {version}: {sql}");
        }
    }
    eprintln!("chdb: the store's SQL runs on ClickHouse {version}");
}

/// Parses the helper's JSON array of strings.
fn parse_string_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("helper output {json:?}: {e}"))
}
