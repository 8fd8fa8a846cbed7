use procwatch_alarm::backtest::*;
fn main() {
    let f = std::env::args().nth(1).unwrap();
    let t = parse_trace("mem", &std::fs::read_to_string(&f).unwrap()).unwrap();
    let p = prepare(&t, Scale::Auto, 80.0);
    let ev = events(&p.y, 80.0);
    println!("n {} scaled {} events {}", p.y.len(), p.scaled, ev.len());
    for &c in ev.iter().take(40) {
        let s: Vec<String> = p.y[c-8..(c+2).min(p.y.len())].iter().map(|v| format!("{v:.1}")).collect();
        println!("{c:5} {}", s.join(" "));
    }
}
