use procwatch_alarm::backtest::*;
use procwatch_alarm::forecast::*;
use std::collections::BTreeMap;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or("../../../shared/data/traces".into());
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "csv")).collect();
    files.sort();
    let proto = Protocol::default();
    let preps: Vec<Prepared> = files.iter().map(|f| {
        let t = parse_trace(f.file_name().unwrap().to_str().unwrap(), &std::fs::read_to_string(f).unwrap()).unwrap();
        prepare(&t, Scale::Auto, 80.0)
    }).collect();
    for (name, mk) in [
        ("oracle", None),
        ("linear", Some(Box::new(|| Box::new(Linear::new(3)) as Box<dyn Forecaster>) as Box<dyn Fn() -> Box<dyn Forecaster>>)),
        ("holt", Some(Box::new(|| Box::new(Holt::new(0.8, 0.4, 300_000)) as Box<dyn Forecaster>))),
        ("persist", Some(Box::new(|| Box::new(Persistence::default()) as Box<dyn Forecaster>))),
    ] {
        let mut pool: BTreeMap<String, Score> = BTreeMap::new();
        for p in &preps {
            let flags = match &mk { None => oracle_flags(p, &proto), Some(mk) => forecast_flags(p, &proto, &mut *mk()) };
            let s = score(p, &proto, &flags);
            pool.entry(p.group.clone()).or_default().add(&s);
        }
        for (g, s) in pool {
            println!("{name:8} {g:11} ev {:4} caught {:4} false {:5} days {:.2} amber% {:.2}", s.events, s.caught, s.false_episodes, s.days, s.amber_pct());
        }
    }
}
