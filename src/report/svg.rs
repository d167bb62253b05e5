//! A small SVG writer: line charts with axes, ticks, legend and shaded bands, and Gantt lanes.
//! The output is well-formed XML (text is escaped), usable inline in HTML or as a file.

use std::fmt::Write;

/// Colours for series, in order (colour-blind safe, Okabe–Ito).
pub(crate) const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// Escape text for XML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// One line of a chart.
#[derive(Debug, Clone, Default)]
pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw as a step function (CDF).
    pub step: bool,
    /// Shaded band `(x, low, high)` drawn under the line.
    pub band: Vec<(f64, f64, f64)>,
    /// Draw a dot at every point.
    pub dots: bool,
    /// A small label above each point (e.g. the number of variants of a bin).
    pub labels: Vec<String>,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineChart {
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range (else from the data, from 0).
    pub y_range: Option<(f64, f64)>,
    /// Logarithmic x axis.
    pub log_x: bool,
}

const W: f64 = 760.0;
const H: f64 = 360.0;
const L: f64 = 70.0;
const R: f64 = 180.0;
const T: f64 = 40.0;
const B: f64 = 50.0;

/// About `n` round tick values covering `lo..=hi`.
pub(crate) fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

pub(crate) fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn open_svg(o: &mut String, id: &str, w: f64, h: f64, title: &str) {
    let _ = write!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" id="{}" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12"><rect width="{w}" height="{h}" fill="#ffffff"/><text x="{}" y="22" font-size="15" font-weight="bold">{}</text>"##,
        esc(id),
        L,
        esc(title)
    );
}

impl LineChart {
    /// Render as an `<svg>` element.
    pub(crate) fn render(&self) -> String {
        let fx = |x: f64| if self.log_x { x.max(1e-9).log10() } else { x };
        let pts = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let (mut x0, mut x1) = pts.fold((f64::MAX, f64::MIN), |(a, b), x| {
            (a.min(fx(x)), b.max(fx(x)))
        });
        if x0 > x1 {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        let (y0, y1) = self.y_range.unwrap_or_else(|| {
            let m = self
                .series
                .iter()
                .flat_map(|s| {
                    s.points
                        .iter()
                        .map(|p| p.1)
                        .chain(s.band.iter().map(|b| b.2))
                })
                .fold(0.0f64, f64::max);
            (0.0, if m > 0.0 { m * 1.05 } else { 1.0 })
        });
        let pw = W - L - R;
        let ph = H - T - B;
        let sx = |x: f64| L + (fx(x) - x0) / (x1 - x0) * pw;
        let sy = |y: f64| T + ph - (y - y0) / (y1 - y0) * ph;
        let mut o = String::new();
        open_svg(&mut o, &self.id, W, H, &self.title);
        // axes and grid
        for ty in ticks(y0, y1, 5) {
            let _ = write!(
                o,
                r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                L + pw,
                L - 6.0,
                sy(ty) + 4.0,
                num(ty),
                y = sy(ty)
            );
        }
        let xt: Vec<f64> = if self.log_x {
            let lo = x0.floor() as i32;
            let hi = x1.ceil() as i32;
            (lo..=hi)
                .map(|e| 10f64.powi(e))
                .filter(|&v| fx(v) >= x0 - 1e-9 && fx(v) <= x1 + 1e-9)
                .collect()
        } else {
            ticks(x0, x1, 8)
        };
        for tx in xt {
            let x = sx(tx);
            let _ = write!(
                o,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{T}" y2="{}" stroke="#eeeeee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                T + ph,
                T + ph + 16.0,
                num(tx)
            );
        }
        let _ = write!(
            o,
            r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333333"/><text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"##,
            L + pw / 2.0,
            H - 10.0,
            esc(&self.x_label),
            T + ph / 2.0,
            esc(&self.y_label)
        );
        // the first series (the overall one) is drawn last, on top
        for (i, s) in self.series.iter().enumerate().rev() {
            let c = PALETTE[i % PALETTE.len()];
            if !s.band.is_empty() {
                let mut d = String::new();
                for (k, b) in s.band.iter().enumerate() {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if k == 0 { "M" } else { "L" },
                        sx(b.0),
                        sy(b.2)
                    );
                }
                for b in s.band.iter().rev() {
                    let _ = write!(d, "L{:.1},{:.1} ", sx(b.0), sy(b.1));
                }
                d.push('Z');
                let _ = write!(
                    o,
                    r#"<path class="band" d="{d}" fill="{c}" fill-opacity="0.15" stroke="none"/>"#
                );
            }
            let mut d = String::new();
            let mut prev: Option<(f64, f64)> = None;
            for &(x, y) in &s.points {
                match prev {
                    None => {
                        let _ = write!(d, "M{:.1},{:.1} ", sx(x), sy(y));
                    }
                    Some((_, py)) if s.step => {
                        let _ =
                            write!(d, "L{:.1},{:.1} L{:.1},{:.1} ", sx(x), sy(py), sx(x), sy(y));
                    }
                    Some(_) => {
                        let _ = write!(d, "L{:.1},{:.1} ", sx(x), sy(y));
                    }
                }
                prev = Some((x, y));
            }
            let _ = write!(
                o,
                r#"<path class="series" d="{}" fill="none" stroke="{c}" stroke-width="2"><title>{}</title></path>"#,
                d.trim_end(),
                esc(&s.name)
            );
            for (&(x, y), l) in s.points.iter().zip(&s.labels) {
                let _ = write!(
                    o,
                    r##"<text class="label" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#555555">{}</text>"##,
                    sx(x),
                    sy(y) - 7.0,
                    esc(l)
                );
            }
            if s.dots {
                for &(x, y) in &s.points {
                    let _ = write!(
                        o,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                        sx(x),
                        sy(y)
                    );
                }
            }
            let ly = T + 10.0 + i as f64 * 18.0;
            let _ = write!(
                o,
                r#"<rect x="{}" y="{}" width="14" height="4" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
                W - R + 12.0,
                ly,
                W - R + 32.0,
                ly + 5.0,
                esc(&truncate(&s.name, 22))
            );
        }
        o.push_str("</svg>");
        o
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// One bar of a Gantt lane.
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub start: f64,
    pub end: f64,
    pub color: &'static str,
    pub label: String,
}

/// One lane of a Gantt chart.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lane {
    pub name: String,
    pub bars: Vec<Bar>,
    pub releases: Vec<f64>,
    pub deadlines: Vec<f64>,
}

/// A Gantt chart: lanes of bars over time, release (up triangle) and deadline (down tick)
/// markers.
pub(crate) fn gantt(id: &str, title: &str, lanes: &[Lane], legend: &[(&str, &str)]) -> String {
    let all = lanes.iter().flat_map(|l| {
        l.bars
            .iter()
            .flat_map(|b| [b.start, b.end])
            .chain(l.releases.iter().copied())
            .chain(l.deadlines.iter().copied())
    });
    let (mut x0, mut x1) = all.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let lane_h = 34.0;
    let h = T + B + lane_h * lanes.len().max(1) as f64 + 20.0;
    let pw = W - L - R;
    let sx = |x: f64| L + (x - x0) / (x1 - x0) * pw;
    let mut o = String::new();
    open_svg(&mut o, id, W, h, title);
    let bottom = T + lane_h * lanes.len().max(1) as f64;
    for tx in ticks(x0, x1, 8) {
        let x = sx(tx);
        let _ = write!(
            o,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{T}" y2="{bottom}" stroke="#eeeeee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            bottom + 16.0,
            num(tx)
        );
    }
    let _ = write!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">target time (ms)</text>"#,
        L + pw / 2.0,
        bottom + 34.0
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = T + i as f64 * lane_h;
        let _ = write!(
            o,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text><line x1="{L}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#999999"/>"##,
            L - 6.0,
            y + lane_h / 2.0 + 4.0,
            esc(&truncate(&lane.name, 10)),
            L + pw,
            y + lane_h - 2.0,
            y + lane_h - 2.0
        );
        for b in &lane.bars {
            let x = sx(b.start);
            let w = (sx(b.end) - x).max(1.5);
            let _ = write!(
                o,
                r##"<rect class="job" x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}" stroke="#333333" stroke-width="0.5"><title>{}</title></rect>"##,
                y + 8.0,
                lane_h - 14.0,
                b.color,
                esc(&b.label)
            );
        }
        for &r in &lane.releases {
            let x = sx(r);
            let _ = write!(
                o,
                r##"<path class="release" d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="#000000"/>"##,
                x - 3.0,
                y + lane_h - 2.0,
                x + 3.0,
                y + lane_h - 2.0,
                x,
                y + lane_h - 9.0
            );
        }
        for &d in &lane.deadlines {
            let x = sx(d);
            let _ = write!(
                o,
                r##"<line class="deadline" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#CC0000" stroke-width="2"/>"##,
                y + 2.0,
                y + 10.0
            );
        }
    }
    for (i, (name, color)) in legend.iter().enumerate() {
        let ly = T + 10.0 + i as f64 * 18.0;
        let _ = write!(
            o,
            r##"<rect x="{}" y="{}" width="14" height="10" fill="{color}" stroke="#333333" stroke-width="0.5"/><text x="{}" y="{}">{}</text>"##,
            W - R + 12.0,
            ly - 3.0,
            W - R + 32.0,
            ly + 6.0,
            esc(name)
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!((t[3] - 0.6).abs() < 1e-12 && t[5] == 1.0);
        let t = ticks(3.0, 997.0, 8);
        assert!(t.first().unwrap() >= &3.0 && t.last().unwrap() <= &997.0);
        assert!(t.len() >= 4);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
