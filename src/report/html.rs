//! The report page: tables and charts of an [`Analysis`], as well-formed XHTML-compatible
//! HTML with inline SVG and no external resource.

use std::fmt::Write;

use taskdist_handlers::reader::OutcomeKind;
use taskdist_handlers::EventKind;

use super::svg::{esc, gantt, num, Bar, Lane, LineChart, Series, PALETTE};
use super::{wilson, Analysis, GanttVariant, LogHistogram};

/// Colour of a job bar by how the job ended.
fn exit_color(k: Option<&EventKind>) -> &'static str {
    match k {
        Some(EventKind::Exit) => "#7fbf7f",
        Some(EventKind::ExitPeriod) => "#e06666",
        Some(EventKind::ExitCritical) => "#f6b26b",
        Some(EventKind::OutOfQuota) | Some(EventKind::OutOfCaps) => "#b4a7d6",
        Some(_) => "#a4c2f4",
        None => "#cccccc",
    }
}

/// Name of the curve over all targets.
const ALL: &str = "all targets";

const GANTT_LEGEND: [(&str, &str); 6] = [
    ("EXIT", "#7fbf7f"),
    ("EXIT_PERIOD", "#e06666"),
    ("EXIT_CRITICAL", "#f6b26b"),
    ("OUT_OF_*", "#b4a7d6"),
    ("other end", "#a4c2f4"),
    ("no end", "#cccccc"),
];

/// A chart of the report: its id (also the file name stem with `--format svg`) and SVG.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Element id and file stem, e.g. `chart-schedulability`.
    pub id: String,
    /// The `<svg>` element.
    pub svg: String,
}

fn cdf(h: &LogHistogram) -> Vec<(f64, f64)> {
    let n = h.count() as f64;
    let mut cum = 0u64;
    let mut pts = Vec::new();
    if let Some(m) = h.min() {
        pts.push((m as f64, 0.0));
    }
    for (v, c) in h.buckets() {
        cum += c;
        pts.push((v as f64, cum as f64 / n));
    }
    pts
}

fn top_tasks(a: &Analysis) -> Vec<u32> {
    let mut ids: Vec<(u64, u32)> = a.tasks.iter().map(|(id, t)| (t.jobs, *id)).collect();
    ids.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    let mut ids: Vec<u32> = ids.into_iter().take(PALETTE.len()).map(|x| x.1).collect();
    ids.sort_unstable();
    ids
}

/// Every chart of the report, in page order.
pub fn charts(a: &Analysis) -> Vec<Chart> {
    let mut out = Vec::new();
    // throughput and failures over time
    let mut top: Vec<(&String, u64)> = a.targets.iter().map(|(k, t)| (k, t.done + t.bad)).collect();
    top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    top.truncate(PALETTE.len() - 1);
    let width = a
        .targets
        .values()
        .map(|t| t.timeline.width_us)
        .max()
        .unwrap_or(1_000_000);
    let used = a
        .targets
        .values()
        .map(|t| {
            let w = (t.timeline.width_us / width.max(1)).max(1) as usize;
            let last = t
                .timeline
                .done
                .iter()
                .zip(&t.timeline.bad)
                .rposition(|(d, b)| d + b > 0)
                .map_or(0, |i| i + 1);
            last.div_ceil(w).max(1)
        })
        .max()
        .unwrap_or(1);
    let series_of = |bad: bool, name: &str, only: Option<&String>| {
        let mut per = vec![0u64; super::Timeline::BUCKETS];
        for (k, t) in &a.targets {
            if only.is_some_and(|o| o != k) {
                continue;
            }
            let f = (width / t.timeline.width_us).max(1) as usize;
            let src = if bad {
                &t.timeline.bad
            } else {
                &t.timeline.done
            };
            for (i, c) in src.iter().enumerate() {
                per[i / f] += c;
            }
        }
        let w_s = width as f64 / 1e6;
        Series {
            name: name.to_owned(),
            points: (0..used)
                .map(|i| ((i as f64 + 0.5) * w_s, per[i] as f64 / w_s))
                .collect(),
            dots: used < 3,
            ..Default::default()
        }
    };
    for (bad, id, title, y) in [
        (
            false,
            "chart-throughput",
            "Throughput over time",
            "done variants per second",
        ),
        (
            true,
            "chart-failures",
            "Failures (bad variants) over time",
            "bad variants per second",
        ),
    ] {
        let mut series = vec![series_of(bad, "all targets", None)];
        if a.targets.len() > 1 {
            for (t, _) in &top {
                series.push(series_of(bad, t, Some(t)));
            }
        }
        out.push(Chart {
            id: id.into(),
            svg: LineChart {
                id: id.into(),
                title: title.into(),
                x_label: format!(
                    "seconds since the run started (bins of {} s)",
                    num(width as f64 / 1e6)
                ),
                y_label: y.into(),
                series,
                ..Default::default()
            }
            .render(),
        });
    }
    // schedulability
    let sched: Vec<Series> = a
        .curves
        .iter()
        .map(|(name, bins)| Series {
            name: name.clone(),
            points: bins
                .iter()
                .map(|b| {
                    (
                        b.x,
                        b.counts.schedulable as f64 / b.counts.variants.max(1) as f64,
                    )
                })
                .collect(),
            // the band of the overall curve only: per-target bands would hide each other
            band: if name == ALL {
                bins.iter()
                    .map(|b| {
                        let (lo, hi) = wilson(b.counts.schedulable, b.counts.variants);
                        (b.x, lo, hi)
                    })
                    .collect()
            } else {
                Vec::new()
            },
            labels: if name == ALL {
                bins.iter()
                    .map(|b| format!("n={}", b.counts.variants))
                    .collect()
            } else {
                Vec::new()
            },
            dots: true,
            ..Default::default()
        })
        .collect();
    out.push(Chart {
        id: "chart-schedulability".into(),
        svg: LineChart {
            id: "chart-schedulability".into(),
            title: format!(
                "Schedulability against {} (95 % Wilson band, n variants per bin)",
                a.by
            ),
            x_label: a.by.to_string(),
            y_label: "fraction schedulable".into(),
            series: sched,
            y_range: Some((0.0, 1.0)),
            ..Default::default()
        }
        .render(),
    });
    // response time CDF and execution time distribution
    let ids = top_tasks(a);
    for (id, title, x, pick) in [
        (
            "chart-response-cdf",
            "Response time per task (CDF)",
            "response time (ms, log scale)",
            true,
        ),
        (
            "chart-execution",
            "Execution time (end - START) per task (CDF)",
            "execution time (ms, log scale)",
            false,
        ),
    ] {
        let series = ids
            .iter()
            .map(|t| {
                let s = &a.tasks[t];
                let h = if pick { &s.response } else { &s.execution };
                Series {
                    name: format!("task {t}"),
                    points: cdf(h).into_iter().map(|(x, y)| (x.max(1.0), y)).collect(),
                    step: true,
                    ..Default::default()
                }
            })
            .collect();
        out.push(Chart {
            id: id.into(),
            svg: LineChart {
                id: id.into(),
                title: title.into(),
                x_label: x.into(),
                y_label: "fraction of jobs".into(),
                series,
                y_range: Some((0.0, 1.0)),
                log_x: true,
            }
            .render(),
        });
    }
    // deadline misses
    let mut miss: Vec<Series> = a
        .curves
        .iter()
        .map(|(name, bins)| Series {
            name: format!("variants with a miss: {name}"),
            points: bins
                .iter()
                .map(|b| {
                    (
                        b.x,
                        b.counts.with_miss as f64 / b.counts.variants.max(1) as f64,
                    )
                })
                .collect(),
            dots: true,
            ..Default::default()
        })
        .collect();
    if let Some((_, bins)) = a.curves.first() {
        miss.push(Series {
            name: "jobs missed: all targets".into(),
            points: bins
                .iter()
                .map(|b| {
                    (
                        b.x,
                        b.counts.missed_jobs as f64 / b.counts.jobs.max(1) as f64,
                    )
                })
                .collect(),
            dots: true,
            ..Default::default()
        });
    }
    out.push(Chart {
        id: "chart-misses".into(),
        svg: LineChart {
            id: "chart-misses".into(),
            title: format!("Deadline misses against {}", a.by),
            x_label: a.by.to_string(),
            y_label: "fraction".into(),
            series: miss,
            y_range: Some((0.0, 1.0)),
            ..Default::default()
        }
        .render(),
    });
    for g in &a.gantt {
        out.push(gantt_chart(g));
    }
    out
}

fn gantt_chart(g: &GanttVariant) -> Chart {
    let id = format!("chart-gantt-{}", g.row.variant);
    let mut lanes: Vec<Lane> = Vec::new();
    for t in &g.tasks {
        let core = if t.cores > 0 {
            format!(" c{}", t.coreoffset)
        } else {
            String::new()
        };
        let mut lane = Lane {
            name: format!("task {}{core}", t.task_id),
            ..Default::default()
        };
        for j in g.jobs.iter().filter(|j| j.task_id == t.task_id) {
            if let Some(r) = j.release_ms {
                lane.releases.push(r as f64);
            }
            if let Some(d) = j.deadline_ms {
                lane.deadlines.push(d as f64);
            }
            let (s, e) = match (j.start_ms, j.end_ms) {
                (Some(s), Some(e)) => (s, e),
                (Some(s), None) => (s, s),
                (None, Some(e)) => (e, e),
                (None, None) => continue,
            };
            lane.bars.push(Bar {
                start: s as f64,
                end: e as f64,
                color: exit_color(j.exit.as_ref()),
                label: format!(
                    "task {} job {}: release {}, start {}, end {}, {}{}",
                    j.task_id,
                    j.job,
                    opt(j.release_ms),
                    opt(j.start_ms),
                    opt(j.end_ms),
                    j.exit.as_ref().map_or("no end", |k| k.as_wire()),
                    if j.missed { ", deadline missed" } else { "" }
                ),
            });
        }
        lanes.push(lane);
    }
    let title = format!(
        "Variant {} ({}): {} on {}",
        g.row.variant,
        g.why,
        match g.row.outcome {
            OutcomeKind::Done => "done",
            OutcomeKind::Bad => "bad",
        },
        g.row.target
    );
    Chart {
        svg: gantt(&id, &title, &lanes, &GANTT_LEGEND),
        id,
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn optf(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The charts as SVG files: `(file name, content)` with an XML declaration.
pub fn chart_files(a: &Analysis) -> Vec<(String, String)> {
    charts(a)
        .into_iter()
        .map(|c| {
            (
                format!("{}.svg", c.id),
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n", c.svg),
            )
        })
        .collect()
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
th{background:#f3f3f3}td.l,th.l{text-align:left}\
pre{background:#f6f6f6;padding:0.6em;max-height:20em;overflow:auto}\
svg.chart{display:block;margin:0.5em 0 1.5em;border:1px solid #ddd}";

/// The whole report as one HTML page.
pub fn render_html(a: &Analysis) -> String {
    let charts = charts(a);
    let chart = |id: &str| {
        charts
            .iter()
            .find(|c| c.id == id)
            .map_or(String::new(), |c| c.svg.clone())
    };
    let mut o = String::new();
    let title = format!("taskdist report: {}", a.run.spec_name);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        esc(&title),
        esc(&title)
    );
    // overview
    o.push_str("<h2 id=\"overview\">Overview</h2><table>");
    let row = |o: &mut String, id: &str, k: &str, v: String| {
        let _ = write!(
            o,
            "<tr><th class=\"l\">{}</th><td id=\"{}\">{}</td></tr>",
            esc(k),
            esc(id),
            esc(&v)
        );
    };
    row(&mut o, "o-dir", "directory", a.dir.display().to_string());
    row(&mut o, "o-source", "read from", a.source.clone());
    row(&mut o, "o-spec", "spec", a.run.spec_name.clone());
    row(&mut o, "o-seed", "seed", a.run.seed.to_string());
    row(&mut o, "o-dialect", "dialect", a.run.dialect.clone());
    row(&mut o, "o-command", "command", a.run.command.join(" "));
    row(
        &mut o,
        "o-planned",
        "planned variants",
        a.run
            .planned_variants
            .map_or("unbounded".into(), |v| v.to_string()),
    );
    row(&mut o, "n-done", "done", a.done.to_string());
    row(&mut o, "n-bad", "bad", a.bad.to_string());
    row(
        &mut o,
        "n-requeued",
        "attempts requeued",
        a.run
            .summary
            .as_ref()
            .map_or("-".into(), |s| s.requeued.to_string()),
    );
    row(
        &mut o,
        "n-schedulable",
        "schedulable (of done)",
        a.schedulable.to_string(),
    );
    row(
        &mut o,
        "n-no-x",
        &format!("done without a value of {}", a.by),
        a.no_x.to_string(),
    );
    row(
        &mut o,
        "o-elapsed",
        "elapsed (s)",
        a.elapsed_s().map_or("-".into(), |e| format!("{e:.3}")),
    );
    row(
        &mut o,
        "o-rate",
        "variants per second",
        a.rate().map_or("-".into(), |r| format!("{r:.1}")),
    );
    o.push_str("</table><details><summary>spec text</summary><pre>");
    o.push_str(&esc(&a.run.spec_text));
    o.push_str("</pre></details>");
    o.push_str("<h3>Events by type</h3><table><tr><th class=\"l\">type</th><th>events</th></tr>");
    for (k, v) in &a.event_types {
        let _ = write!(
            o,
            "<tr><td class=\"l\">{}</td><td id=\"ev-{}\">{v}</td></tr>",
            esc(k),
            esc(k)
        );
    }
    o.push_str("</table><h3>Jobs by how they ended</h3><table><tr><th class=\"l\">end</th><th>jobs</th></tr>");
    for (k, v) in &a.job_exits {
        let _ = write!(
            o,
            "<tr><td class=\"l\">{}</td><td id=\"exit-{}\">{v}</td></tr>",
            esc(k),
            esc(k)
        );
    }
    o.push_str("</table>");
    if !a.bad_reasons.is_empty() {
        o.push_str("<h3>Why variants are bad</h3><table><tr><th class=\"l\">reason</th><th>variants</th></tr>");
        for (k, v) in &a.bad_reasons {
            let _ = write!(o, "<tr><td class=\"l\">{}</td><td>{v}</td></tr>", esc(k));
        }
        o.push_str("</table>");
    }
    o.push_str("<h3 id=\"targets\">Targets</h3><table><tr><th class=\"l\">target</th><th>done</th><th>bad</th><th>retried</th><th>busy (s)</th><th>done per second</th></tr>");
    let elapsed = a.elapsed_s().unwrap_or(0.0);
    for (k, t) in &a.targets {
        let _ = write!(
            o,
            "<tr class=\"target\" data-target=\"{}\"><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
            esc(k),
            esc(k),
            t.done,
            t.bad,
            t.retried,
            t.busy_us as f64 / 1e6,
            if elapsed > 0.0 {
                format!("{:.2}", t.done as f64 / elapsed)
            } else {
                "-".into()
            }
        );
    }
    o.push_str("</table>");
    o.push_str(&chart("chart-throughput"));
    o.push_str(&chart("chart-failures"));
    // schedulability
    let _ = write!(
        o,
        "<h2 id=\"schedulability\">Schedulability</h2><p>A done variant is schedulable when every task ran its <code>numberofjobs</code> jobs, all ended with EXIT, and no job missed its deadline. Bad variants are left out. Bins are centred on multiples of the bin width; the band is the 95 % Wilson score interval.</p>{}",
        chart("chart-schedulability")
    );
    o.push_str("<table><tr><th class=\"l\">curve</th><th>x</th><th>variants</th><th>schedulable</th><th>fraction</th><th>95 % low</th><th>95 % high</th><th>with a miss</th><th>jobs</th><th>jobs missed</th></tr>");
    for (name, bins) in &a.curves {
        for b in bins {
            let c = &b.counts;
            let (lo, hi) = wilson(c.schedulable, c.variants);
            let _ = write!(
                o,
                "<tr class=\"bin\" data-curve=\"{}\" data-x=\"{}\" data-n=\"{}\" data-schedulable=\"{}\" data-miss=\"{}\" data-jobs=\"{}\" data-missed-jobs=\"{}\"><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{lo:.3}</td><td>{hi:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                num(b.x),
                c.variants,
                c.schedulable,
                c.with_miss,
                c.jobs,
                c.missed_jobs,
                esc(name),
                num(b.x),
                c.variants,
                c.schedulable,
                c.schedulable as f64 / c.variants.max(1) as f64,
                c.with_miss,
                c.jobs,
                c.missed_jobs
            );
        }
    }
    o.push_str("</table>");
    // response times
    let _ = write!(
        o,
        "<h2 id=\"response\">Response and execution times</h2><p>Response time = end of the job minus its release; execution time = end minus START (preemptions included). Percentiles are nearest-rank over all jobs of the task id, exact below 2048 ms and within 0.1 % above.</p>{}",
        chart("chart-response-cdf")
    );
    o.push_str("<table><tr><th>task</th><th>jobs</th><th>missed</th><th>response p50</th><th>p95</th><th>p99</th><th>max</th><th>execution p50</th><th>p95</th><th>p99</th><th>max</th></tr>");
    for (id, t) in &a.tasks {
        let _ = write!(
            o,
            "<tr class=\"task\" data-task=\"{id}\"><td>{id}</td><td id=\"jobs-{id}\">{}</td><td id=\"missed-{id}\">{}</td>",
            t.jobs, t.missed
        );
        for (h, pre) in [(&t.response, "resp"), (&t.execution, "exec")] {
            for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                let _ = write!(
                    o,
                    "<td id=\"{pre}-{id}-{name}\">{}</td>",
                    optf(h.quantile(q))
                );
            }
            let _ = write!(o, "<td id=\"{pre}-{id}-max\">{}</td>", optf(h.max()));
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
    o.push_str(&chart("chart-execution"));
    let _ = write!(
        o,
        "<h2 id=\"misses\">Deadline misses</h2><p>A job misses its deadline when it ends after release + D (D = deadline, or the period when the deadline is 0), is killed by EXIT_PERIOD, or never ends.</p>{}",
        chart("chart-misses")
    );
    o.push_str("<h2 id=\"schedules\">Schedules</h2><p>One lane per task (cN: first core of its affinity space), bars from START to the ending event, triangles at releases, red ticks at absolute deadlines. Hover a bar for its times.</p>");
    if a.gantt.is_empty() {
        o.push_str("<p>No variant to draw.</p>");
    }
    for g in &a.gantt {
        let _ = write!(o, "<h3>Variant {} ({})</h3>", g.row.variant, esc(&g.why));
        o.push_str(&chart(&format!("chart-gantt-{}", g.row.variant)));
    }
    let _ = writeln!(
        o,
        "<p>Written by taskdist {}.</p></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    o
}
