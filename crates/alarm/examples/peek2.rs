use procwatch_alarm::backtest::*;
fn main() {
    let f = std::env::args().nth(1).unwrap();
    let t = parse_trace("mem", &std::fs::read_to_string(&f).unwrap()).unwrap();
    let p = prepare(&t, Scale::Auto, 80.0);
    let y = &p.y;
    let ev = events(y, 80.0);
    let mut pos = vec![false; y.len()];
    for &c in &ev { pos[c-1] = true; pos[c-2] = true; }
    // histogram of y for eligible samples: pos vs neg
    let bins = [76.0, 77.0, 78.0, 78.5, 79.0, 79.25, 79.5, 79.75, 80.01];
    let mut hp = vec![0; bins.len()]; let mut hn = vec![0; bins.len()]; let mut hany = vec![0; bins.len()];
    for i in 12..y.len() { if y[i] > 80.0 { continue; }
        let b = bins.iter().position(|&b| y[i] < b).unwrap_or(bins.len()-1);
        let any = (i+1..(i+3).min(y.len())).any(|j| y[j] > 80.0);
        if pos[i] { hp[b] += 1 } else { hn[b] += 1 }
        if any { hany[b] += 1 }
    }
    println!("bins<{:?}\npos {:?}\nneg {:?}\nabove-in-next-2 {:?}", bins, hp, hn, hany);
}
