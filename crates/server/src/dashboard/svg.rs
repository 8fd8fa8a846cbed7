//! The chart itself: [`ChartData`] drawn as an SVG document with `plotters`, in a theme.

/// Colours of one theme.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// The chart's background.
    pub background: (u8, u8, u8),
    /// Title, labels and tick text.
    pub text: (u8, u8, u8),
    /// The grid lines.
    pub grid: (u8, u8, u8),
    /// The measured series.
    pub line: (u8, u8, u8),
    /// The threshold line.
    pub threshold: (u8, u8, u8),
    /// The forecast line.
    pub forecast: (u8, u8, u8),
}

/// The light theme (the default).
pub const LIGHT: Theme = Theme {
    background: (255, 255, 255),
    text: (55, 60, 70),
    grid: (228, 231, 236),
    line: (37, 99, 235),
    threshold: (220, 38, 38),
    forecast: (217, 119, 6),
};

/// The dark theme.
pub const DARK: Theme = Theme {
    background: (24, 27, 33),
    text: (200, 205, 215),
    grid: (52, 58, 68),
    line: (96, 165, 250),
    threshold: (248, 113, 113),
    forecast: (251, 191, 36),
};

/// Everything one chart shows, already fetched: pure input of [`render_svg`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChartData {
    /// The chart's title (host and process).
    pub title: String,
    /// The y axis label, with its unit (`cpu %`, `mem %`, `cores`).
    pub y_label: &'static str,
    /// (minutes relative to now, value), oldest first.
    pub points: Vec<(f64, f64)>,
    /// x range in minutes relative to now.
    pub x_from: f64,
    /// The x range's end, minutes relative to now.
    pub x_to: f64,
    /// The threshold line, in the metric's unit (none: not drawn).
    pub threshold: Option<f64>,
    /// (minutes relative to now, value) of the forecast, starting at the last point.
    pub forecast: Option<[(f64, f64); 2]>,
    /// Percent metrics start at 0 and reach at least the threshold.
    pub percent: bool,
}

/// The largest value a chart's y axis shows, and the largest `threshold` accepted: plotters
/// loops without end on an infinite axis (a stored 1.7e308 times 1.15), and no cpu %, mem % or
/// core count comes near it. Larger values are drawn at the cap.
pub const Y_CAP: f64 = 1e9;

/// `s` with every character XML 1.0 forbids (controls but tab/LF/CR, U+FFFE, U+FFFF, lone
/// surrogates cannot occur in `str`) replaced by U+FFFD, so the SVG stays well-formed.
pub fn xml_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `d` with every number made drawable: non-finite points dropped, values clamped to
/// `0..=Y_CAP`, x within the finite range; `Err` when the x range itself is not finite.
fn sanitize(d: &ChartData) -> Result<ChartData, String> {
    if !(d.x_from.is_finite() && d.x_to.is_finite() && d.x_from < d.x_to) {
        return Err(format!("bad x range {}..{}", d.x_from, d.x_to));
    }
    let y = |v: f64| v.clamp(0.0, Y_CAP);
    let ok = |p: &(f64, f64)| p.0.is_finite() && !p.1.is_nan();
    let pt = |p: (f64, f64)| (p.0.clamp(d.x_from, d.x_to), y(p.1));
    Ok(ChartData {
        title: xml_safe(&d.title),
        y_label: d.y_label,
        points: d.points.iter().filter(|p| ok(p)).map(|&p| pt(p)).collect(),
        x_from: d.x_from,
        x_to: d.x_to,
        threshold: d.threshold.filter(|t| !t.is_nan()).map(y),
        forecast: d.forecast.filter(|f| f.iter().all(ok)).map(|f| [pt(f[0]), pt(f[1])]),
        percent: d.percent,
    })
}

/// Renders a chart as an SVG document. Pure: same data, same bytes. Every number is made
/// drawable first (see [`Y_CAP`]), and every character of the title valid XML.
pub fn render_svg(d: &ChartData, theme: &Theme, width: u32, height: u32) -> Result<String, String> {
    use plotters::prelude::*;
    let d = &sanitize(d)?;
    let rgb = |c: (u8, u8, u8)| RGBColor(c.0, c.1, c.2);
    let mut y_max = d.points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    if let Some(t) = d.threshold {
        y_max = y_max.max(t);
    }
    if let Some(f) = d.forecast {
        y_max = y_max.max(f[1].1);
    }
    y_max = if d.percent { (y_max * 1.12).clamp(5.0, 112.0) } else { (y_max * 1.15).max(0.1) };
    // Short spans are labelled in seconds; `+ 0.0` turns -0 into 0.
    let span = d.x_to - d.x_from;
    let seconds = span <= 3.0;
    let x_label = |x: &f64| {
        if seconds {
            format!("{:.0}", (x * 60.0).round() + 0.0)
        } else if span <= 30.0 {
            format!("{:.1}", x + 0.0)
        } else {
            format!("{:.0}", x.round() + 0.0)
        }
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&rgb(theme.background)).map_err(|e| err(&e))?;
        let text = rgb(theme.text);
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .caption(&d.title, ("sans-serif", 14).into_font().color(&text))
            .x_label_area_size(30)
            .y_label_area_size(42)
            .build_cartesian_2d(d.x_from..d.x_to, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .light_line_style(rgb(theme.grid).mix(0.5))
            .bold_line_style(rgb(theme.grid))
            .axis_style(rgb(theme.grid))
            .label_style(("sans-serif", 11).into_font().color(&text))
            .axis_desc_style(("sans-serif", 11).into_font().color(&text))
            .x_desc(if seconds { "seconds from now" } else { "minutes from now" })
            .y_desc(d.y_label)
            .x_labels(7)
            .y_labels(6)
            .x_label_formatter(&x_label)
            .y_label_formatter(&|y| {
                if y_max >= 10.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            })
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(t) = d.threshold {
            chart
                .draw_series(DashedLineSeries::new(
                    [(d.x_from, t), (d.x_to, t)],
                    6,
                    4,
                    rgb(theme.threshold).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
        let line = rgb(theme.line);
        chart
            .draw_series(LineSeries::new(d.points.iter().copied(), line.stroke_width(2)))
            .map_err(|e| err(&e))?;
        let r = if d.points.len() > 150 { 1 } else { 2 };
        chart
            .draw_series(d.points.iter().map(|&p| Circle::new(p, r, line.filled())))
            .map_err(|e| err(&e))?;
        if let Some(f) = d.forecast {
            chart
                .draw_series(DashedLineSeries::new(f, 5, 3, rgb(theme.forecast).stroke_width(2)))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Circle::new(f[1], 3, rgb(theme.forecast).filled())))
                .map_err(|e| err(&e))?;
        }
        // "now"
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (0.0, y_max)],
                rgb(theme.grid).stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_points_threshold_and_forecast() {
        let data = ChartData {
            title: "java on web-1 — cpu %".into(),
            y_label: "cpu %",
            points: vec![(-3.0, 10.0), (-2.0, 20.0), (-1.0, 30.0)],
            x_from: -5.0,
            x_to: 10.0,
            threshold: Some(80.0),
            forecast: Some([(-1.0, 30.0), (10.0, 90.0)]),
            percent: true,
        };
        let svg = render_svg(&data, &LIGHT, 400, 200).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        // 3 markers + the forecast's end marker
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("java on web-1"));
        assert!(
            svg.contains("#DC2626") || svg.to_lowercase().contains("#dc2626"),
            "threshold colour"
        );
        assert_eq!(render_svg(&data, &LIGHT, 400, 200).unwrap(), svg, "deterministic");
        let dark = render_svg(&data, &DARK, 400, 200).unwrap();
        assert_ne!(dark, svg);
    }
}
