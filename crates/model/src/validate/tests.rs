//! Unit tests of batch and legacy validation and of the diagnosis of refused bodies.

use super::*;
use crate::{HostTotal, LegacyPoint, Sample};

const NOW: TsMs = 1_764_070_000_000;
const HOUR: i64 = 3_600_000;

fn limits() -> Limits {
    Limits::new(NOW, 48 * HOUR)
}

fn sample(process: &str) -> Sample {
    Sample {
        ts: NOW,
        process: process.into(),
        cpu: 12.5,
        cores: 0.25,
        mem: 3.2,
        rss: 1 << 28,
        count: 7,
        extras: None,
    }
}

fn batch(samples: Vec<Sample>) -> Batch {
    Batch {
        host: "web-1".into(),
        agent: "test".into(),
        seq: 1,
        interval_ms: 10_000,
        host_totals: vec![HostTotal { ts: NOW, cpu: 41.5, mem: 55.0, unattributed_cpu: None }],
        samples,
        dropped_samples: 0,
        report: None,
    }
}

fn fields(r: &Rejection) -> Vec<(Option<usize>, &str)> {
    r.problems.iter().map(|p| (p.index, p.field.as_str())).collect()
}

#[test]
fn valid_batch_passes_through() {
    let b = batch(vec![sample("postgres"), sample("ünïcode name")]);
    let body = serde_json::to_vec(&b).unwrap();
    assert_eq!(decode_batch(&body, &limits()).unwrap(), b);
}

#[test]
fn each_rule_names_index_and_field() {
    type Case = (Box<dyn Fn(&mut Batch)>, Option<usize>, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(|b| b.host = String::new()), None, "host"),
        (Box::new(|b| b.host = "a".repeat(254)), None, "host"),
        (Box::new(|b| b.host = "web 1".into()), None, "host"),
        (Box::new(|b| b.samples[1].process = String::new()), Some(1), "process"),
        (Box::new(|b| b.samples[1].process = "x".repeat(256)), Some(1), "process"),
        (Box::new(|b| b.samples[1].process = "a\u{7}b".into()), Some(1), "process"),
        (Box::new(|b| b.samples[1].cpu = f64::NAN), Some(1), "cpu"),
        (Box::new(|b| b.samples[1].cpu = 100.5), Some(1), "cpu"),
        (Box::new(|b| b.samples[1].cpu = -0.1), Some(1), "cpu"),
        (Box::new(|b| b.samples[1].mem = f64::INFINITY), Some(1), "mem"),
        (Box::new(|b| b.samples[1].mem = 101.0), Some(1), "mem"),
        (Box::new(|b| b.samples[1].cores = -1.0), Some(1), "cores"),
        (Box::new(|b| b.samples[1].ts = NOW - 48 * HOUR - 1), Some(1), "ts"),
        (Box::new(|b| b.samples[1].ts = NOW + MAX_FUTURE_MS + 1), Some(1), "ts"),
        (Box::new(|b| b.host_totals[0].cpu = 200.0), Some(0), "host_totals.cpu"),
        (Box::new(|b| b.host_totals[0].ts = 0), Some(0), "host_totals.ts"),
    ];
    for (i, (mutate, index, field)) in cases.into_iter().enumerate() {
        let mut b = batch(vec![sample("a"), sample("b")]);
        mutate(&mut b);
        let r = validate_batch(&b, &limits()).expect_err(&format!("case {i} accepted"));
        assert_eq!(fields(&r), vec![(index, field)], "case {i}");
    }
}

#[test]
fn boundaries_are_accepted() {
    let mut b = batch(vec![sample("a"), sample(&"p".repeat(255))]);
    b.host = "h".repeat(253);
    b.samples[0].cpu = 100.0;
    b.samples[0].mem = 0.0;
    b.samples[0].ts = NOW - 48 * HOUR;
    b.samples[1].ts = NOW + MAX_FUTURE_MS;
    validate_batch(&b, &limits()).unwrap();
}

#[test]
fn too_many_samples() {
    let mut l = limits();
    l.max_samples = 3;
    let r = validate_batch(&batch(vec![sample("a"); 4]), &l).unwrap_err();
    assert_eq!(fields(&r), vec![(None, "samples")]);
}

#[test]
fn problems_are_capped_but_counted() {
    let mut b = batch(vec![sample("a"); 50]);
    for s in &mut b.samples {
        s.cpu = 500.0;
    }
    let r = validate_batch(&b, &limits()).unwrap_err();
    assert_eq!(r.problems.len(), MAX_PROBLEMS);
    assert_eq!(r.total, 50);
    assert!(
        r.message().contains("samples[0]") || r.message().contains("cpu[0]"),
        "{}",
        r.message()
    );
}

#[test]
fn raw_json_type_problems() {
    let body = |s: &str| {
        format!(r#"{{"host":"h","samples":[{{"ts":{NOW},"process":"ok","cpu":1,"mem":1}},{s}]}}"#)
    };
    let cases = [
        (r#"{"ts":1,"process":"p","cpu":1,"mem":1,"rss":-5}"#, "rss", "negative"),
        (r#"{"ts":1,"process":"p","cpu":1,"mem":1,"rss":1.5}"#, "rss", "not an integer"),
        (r#"{"ts":1,"process":"p","cpu":1,"mem":1,"count":-1}"#, "count", "negative"),
        (r#"{"ts":1,"process":"p","cpu":1,"mem":1,"count":2.5}"#, "count", "not an integer"),
        (r#"{"ts":1.5,"process":"p","cpu":1,"mem":1}"#, "ts", "not an integer"),
        (r#"{"ts":1,"process":"p","cpu":"high","mem":1}"#, "cpu", "not a number"),
        (r#"{"ts":1,"cpu":1,"mem":1}"#, "process", "missing"),
        (r#"{"ts":1,"process":7,"cpu":1,"mem":1}"#, "process", "not a string"),
    ];
    for (sample, field, reason) in cases {
        let r = decode_batch(body(sample).as_bytes(), &limits()).unwrap_err();
        assert_eq!(fields(&r), vec![(Some(1), field)], "{sample}");
        assert!(r.problems[0].reason.contains(reason), "{sample}: {:?}", r.problems);
    }
}

#[test]
fn out_of_range_number_is_located() {
    let body = format!(
        r#"{{"host":"h","samples":[{{"ts":{NOW},"process":"a","cpu":1,"mem":1}}, {{"ts":{NOW},"process":"b","cpu":1e999,"mem":1}}]}}"#
    );
    let r = decode_batch(body.as_bytes(), &limits()).unwrap_err();
    assert_eq!(fields(&r), vec![(Some(1), "cpu")], "{:?}", r.problems);
}

#[test]
fn syntax_error_is_a_body_problem() {
    let r = decode_batch(b"{not json", &limits()).unwrap_err();
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].reason.starts_with("invalid JSON"));
    let r = decode_batch(b"[1,2]", &limits()).unwrap_err();
    assert_eq!(fields(&r), vec![(None, "body")]);
    let r = decode_batch(b"{\"samples\":[]}", &limits()).unwrap_err();
    assert_eq!(fields(&r), vec![(None, "host")]);
}

fn point(ts_s: f64, value: f64, process: &str, kind: &str) -> LegacyPoint {
    LegacyPoint { timestamp: ts_s, value, process_name: process.into(), type_data: kind.into() }
}

#[test]
fn legacy_joins_cpu_and_mem() {
    let t = NOW as f64 / 1000.0 + 0.5;
    let payload = LegacyPayload {
        ipaddress: "10.0.0.5".into(),
        data: vec![
            point(t, 0.13, "chrome.exe", "mem"),
            point(t, 250.0, "chrome.exe", "cpu"),
            point(t, 1.0, "init", "cpu"),
            point(t, 2.0, "init", "mem"),
        ],
    };
    let b = legacy_to_batch(&payload, &limits()).unwrap();
    assert_eq!(b.host, "10.0.0.5");
    assert_eq!(b.samples.len(), 2);
    let c = &b.samples[0];
    assert_eq!((c.process.as_str(), c.ts), ("chrome.exe", NOW + 500));
    assert_eq!((c.cpu, c.cores, c.mem), (100.0, 2.5, 0.13));
    let i = &b.samples[1];
    assert_eq!((i.process.as_str(), i.cpu, i.cores, i.mem), ("init", 1.0, 0.01, 2.0));
}

#[test]
fn legacy_missing_metric_takes_nearest_in_payload() {
    let t = NOW as f64 / 1000.0;
    let payload = LegacyPayload {
        ipaddress: "h".into(),
        data: vec![
            point(t, 10.0, "p", "cpu"),
            point(t + 10.0, 5.0, "p", "mem"),
            point(t + 30.0, 7.0, "p", "mem"),
            point(t, 3.0, "q", "cpu"),
        ],
    };
    let b = legacy_to_batch(&payload, &limits()).unwrap();
    let got: Vec<(&str, f64, f64)> =
        b.samples.iter().map(|s| (s.process.as_str(), s.cpu, s.mem)).collect();
    assert_eq!(got, vec![("p", 10.0, 5.0), ("p", 10.0, 5.0), ("p", 10.0, 7.0), ("q", 3.0, 0.0)]);
}

#[test]
fn legacy_rules() {
    let t = NOW as f64 / 1000.0;
    let cases = [
        (point(t, LEGACY_MAX_CPU + 1.0, "p", "cpu"), "value"),
        (point(t, 100.5, "p", "mem"), "value"),
        (point(t, 1.0, "p", "disk"), "type_data"),
        (point(t, 1.0, "", "cpu"), "process_name"),
        (point(t - 49.0 * 3600.0, 1.0, "p", "cpu"), "timestamp"),
        (point(f64::NAN, 1.0, "p", "cpu"), "timestamp"),
    ];
    for (bad, field) in cases {
        let payload =
            LegacyPayload { ipaddress: "h".into(), data: vec![point(t, 1.0, "ok", "cpu"), bad] };
        let r = legacy_to_batch(&payload, &limits()).unwrap_err();
        assert_eq!(fields(&r), vec![(Some(1), field)]);
    }
    let payload = LegacyPayload { ipaddress: "bad host".into(), data: vec![] };
    assert_eq!(
        fields(&legacy_to_batch(&payload, &limits()).unwrap_err()),
        vec![(None, "ipaddress")]
    );
    let ok =
        LegacyPayload { ipaddress: "h".into(), data: vec![point(t, LEGACY_MAX_CPU, "p", "cpu")] };
    assert_eq!(legacy_to_batch(&ok, &limits()).unwrap().samples[0].cores, 1024.0);
}

#[test]
fn legacy_raw_json_problems() {
    let body = br#"{"ipaddress":"h","data":[{"timestamp":1,"value":"x","process_name":"p","type_data":"cpu"}]}"#;
    let r = decode_legacy(body, &limits()).unwrap_err();
    assert_eq!(fields(&r), vec![(Some(0), "value")]);
    let r = decode_legacy(br#"{"data":[]}"#, &limits()).unwrap_err();
    assert_eq!(fields(&r), vec![(None, "ipaddress")]);
}

#[test]
fn streamed_diagnosis_names_index_and_field() {
    let l = Limits::new(1_000_000, 1_000_000);
    let body = br#"{"host":"h","seq":-1,"samples":[{"ts":1,"process":"a","cpu":1,"mem":1},
        {"ts":2,"process":"b","cpu":"x","mem":1}],"host_totals":[{"ts":1,"cpu":1}]}"#;
    let r = decode_batch(body, &l).unwrap_err();
    let got: Vec<(Option<usize>, &str)> =
        r.problems.iter().map(|p| (p.index, p.field.as_str())).collect();
    assert_eq!(got, [(None, "seq"), (Some(1), "cpu"), (Some(0), "host_totals.mem")]);
    let r = decode_batch(br#"{"host":"h","samples":"no"}"#, &l).unwrap_err();
    assert_eq!(r.problems[0].field, "samples");
    assert!(r.problems[0].reason.contains("not an array"), "{:?}", r.problems);
    let r = decode_batch(b"[1,2]", &l).unwrap_err();
    assert_eq!(r.problems[0].field, "body");
    let r = decode_legacy(br#"{"ipaddress":"h","data":[{"timestamp":1,"value":"x","process_name":"p","type_data":"cpu"}]}"#, &l).unwrap_err();
    let got: Vec<(Option<usize>, &str)> =
        r.problems.iter().map(|p| (p.index, p.field.as_str())).collect();
    assert_eq!(got, [(Some(0), "value")]);
    let r = decode_legacy(br#"{"ipaddress":"h"}"#, &l).unwrap_err();
    assert_eq!(r.problems[0].field, "data");
}

#[test]
fn hostile_extras_are_refused_and_named() {
    let body = |x: &str| {
        format!(
            r#"{{"host":"h","samples":[{{"ts":{NOW},"process":"p","cpu":1,"mem":1,"extras":{x}}}]}}"#
        )
    };
    let long = "o".repeat(10_000);
    let cases = [
        (r#"{"fds_pct":500}"#.to_owned(), "extras.fds_pct"),
        (r#"{"read_bps":-1}"#.to_owned(), "extras.read_bps"),
        (r#"{"ctxsw_vol":1e300}"#.to_owned(), "extras.ctxsw_vol"),
        (format!(r#"{{"owner":"{long}"}}"#), "extras.owner"),
        (r#"{"unit":"a\nb"}"#.to_owned(), "extras.unit"),
        (r#"{"unit":""}"#.to_owned(), "extras.unit"),
    ];
    for (x, field) in cases {
        let r = decode_batch(body(&x).as_bytes(), &limits()).unwrap_err();
        assert_eq!(fields(&r), vec![(Some(0), field)], "{x}");
    }
    // Wrong types are refused too (fds is a count).
    assert!(decode_batch(body(r#"{"fds":-1}"#).as_bytes(), &limits()).is_err());
    assert!(decode_batch(body(r#"{"threads":"many"}"#).as_bytes(), &limits()).is_err());
    // Good extras pass, and a batch without them is what older agents send.
    let ok = r#"{"fds":12,"fds_pct":1.2,"threads":4,"owner":"www-data","unit":"nginx.service"}"#;
    let b = decode_batch(body(ok).as_bytes(), &limits()).unwrap();
    assert_eq!(b.samples[0].extras.as_ref().unwrap().threads, Some(4));
    let plain = serde_json::to_string(&batch(vec![sample("p")])).unwrap();
    assert!(!plain.contains("extras"), "{plain}");
}
