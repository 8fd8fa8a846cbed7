use procwatch_alarm::backtest::*;
use procwatch_alarm::forecast::*;
use std::collections::BTreeMap;
fn main() {
    let dir = "../../../shared/data/traces";
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "csv")).collect();
    files.sort();
    let proto = Protocol::default();
    let mut pool: BTreeMap<String, Score> = BTreeMap::new();
    for f in &files {
        let t = parse_trace(f.file_name().unwrap().to_str().unwrap(), &std::fs::read_to_string(f).unwrap()).unwrap();
        let p = prepare(&t, Scale::Auto, 80.0);
        let flags = forecast_flags(&p, &proto, &mut Analog::new(AnalogParams::for_horizon(600_000)));
        pool.entry(p.group.clone()).or_default().add(&score(&p, &proto, &flags));
    }
    for (g, s) in pool { println!("{g} {}/{} f{} {:.2}/d {:.2}%", s.caught, s.events, s.false_episodes, s.false_per_day(), s.amber_pct()); }
}
