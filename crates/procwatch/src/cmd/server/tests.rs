use super::*;

#[test]
fn shard_urls_split_by_shard_then_replica() {
    let u = parse_shard_urls("http://a:1,http://b:1;http://c:1, http://d:1").unwrap();
    assert_eq!(u.0, vec![vec!["http://a:1", "http://b:1"], vec!["http://c:1", "http://d:1"]]);
    assert!(parse_shard_urls("http://a:1;c:1").unwrap_err().contains("shard 2"));
}

#[test]
fn loopback_addresses() {
    for a in ["127.0.0.1:8000", "127.3.4.5:0", "[::1]:8000", "localhost:8000", "LOCALHOST:1"] {
        assert!(is_loopback_listen(a), "{a}");
    }
    for a in ["0.0.0.0:8000", "[::]:8000", "10.0.0.5:80", "example.org:80", "192.168.1.2:1"] {
        assert!(!is_loopback_listen(a), "{a}");
    }
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

fn parse(args: &[&str]) -> ServerArgs {
    use clap::Parser;
    let mut argv = vec!["procwatch-server"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("flags parse").server
}

#[test]
fn durable_by_default_relaxed_on_request() {
    // The environment must not decide this test.
    std::env::remove_var("PROCWATCH_DURABILITY");
    assert_eq!(sqlite_options(&parse(&[])).durability, Durability::Power);
    let relaxed = parse(&["--durability", "relaxed"]);
    assert_eq!(sqlite_options(&relaxed).durability, Durability::Process);
    assert!(sqlite_options(&relaxed).retention_ms > 0);
}

#[test]
fn rollups_kept_30_days_and_never_less_than_raw() {
    std::env::remove_var("PROCWATCH_ROLLUP_RETENTION");
    std::env::remove_var("PROCWATCH_RETENTION");
    assert_eq!(sqlite_options(&parse(&[])).rollup_retention_ms, 30 * 86_400_000);
    let short = parse(&["--retention", "72h", "--rollup-retention", "2d"]);
    let err = server_config(&short).unwrap_err().to_string();
    assert!(
        err.contains("--rollup-retention (2days) must be at least --retention (3days)"),
        "{err}"
    );
}

#[test]
fn memory_window_is_the_window_unless_set_longer_and_bounded() {
    std::env::remove_var("PROCWATCH_MEMORY_WINDOW");
    std::env::remove_var("PROCWATCH_WINDOW");
    let ms = |a: &[&str]| sqlite_options(&parse(a)).memory_window_ms;
    assert_eq!(ms(&[]), 300_000);
    assert_eq!(ms(&["--window", "15m"]), 900_000);
    assert_eq!(ms(&["--memory-window", "10m"]), 600_000);
    // Never shorter than what the evaluator and the seed routes read, at most 2 h.
    assert_eq!(ms(&["--window", "15m", "--memory-window", "10m"]), 900_000);
    assert_eq!(ms(&["--memory-window", "30d"]), 7_200_000);
    assert_eq!(ms(&["--window", "10s"]), 60_000);
}

#[test]
fn fold_step_one_minute_by_default_and_bounded() {
    std::env::remove_var("PROCWATCH_FOLD_STEP");
    assert_eq!(sqlite_options(&parse(&[])).fold_step_ms, 60_000);
    assert_eq!(sqlite_options(&parse(&["--fold-step", "5m"])).fold_step_ms, 300_000);
    // A zero step would fold at every pass; a huge one would keep days in memory.
    assert_eq!(sqlite_options(&parse(&["--fold-step", "0s"])).fold_step_ms, 10_000);
    assert_eq!(sqlite_options(&parse(&["--fold-step", "30d"])).fold_step_ms, 7_200_000);
}

#[test]
fn exposure_rule() {
    assert!(check_exposure("127.0.0.1:8000", false, false, false).is_ok());
    assert!(check_exposure("0.0.0.0:8000", true, true, false).is_ok());
    assert!(check_exposure("0.0.0.0:8000", false, false, true).is_ok());
    let err = check_exposure("0.0.0.0:8000", true, false, false).unwrap_err().to_string();
    assert!(err.contains("--read-token") && !err.contains("--write-token"), "{err}");
    let err = check_exposure("[::]:80", false, false, false).unwrap_err().to_string();
    assert!(err.contains("--write-token and --read-token") && err.contains("--insecure"));
}
