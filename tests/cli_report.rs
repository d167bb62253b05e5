//! `taskdist report` and `taskdist show` on a small simulated run: the figures equal values
//! computed here from the CSV rows (by a separate, simple implementation), the HTML parses and
//! holds every chart, it renders in headless Chromium, and bad input exits with 2.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use quick_xml::events::Event;

fn taskdist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_taskdist"))
}

/// One simulated run of `util-uunifast` (90 variants) with CSV and SQLite, shared by the tests.
/// The run must end by itself (bounded wait; a run that hangs fails the tests).
fn run_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let mut child = taskdist()
            .args(["-q", "run", "util-uunifast", "--simulate", "2"])
            .args(["--handler", "csv", "--handler", "sqlite", "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "run failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the simulated run did not end within 180 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (tmp, out)
    })
    .1
}

fn lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn num(s: &str) -> Option<u64> {
    (!s.is_empty()).then(|| s.parse().unwrap())
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

#[derive(Default)]
struct Expected {
    done: u64,
    bad: u64,
    schedulable: u64,
    events: BTreeMap<String, u64>,
    response: BTreeMap<u32, Vec<u64>>,
    execution: BTreeMap<u32, Vec<u64>>,
    missed: BTreeMap<u32, u64>,
    jobs: BTreeMap<u32, u64>,
    /// bin centre in tenths -> (variants, schedulable)
    bins: BTreeMap<i64, (u64, u64)>,
    worst_variant: u64,
}

/// The report's figures, computed from the CSV rows directly.
fn expected(dir: &Path) -> Expected {
    let mut e = Expected::default();
    for r in lines(&dir.join("events.csv")) {
        *e.events.entry(r[6].clone()).or_default() += 1;
    }
    // tasks: (variant, task) -> (C, T, D, n)
    let mut tasks: HashMap<(u64, u32), (u64, u64, u64, u64)> = HashMap::new();
    let mut ids: HashMap<u64, Vec<u32>> = HashMap::new();
    for r in lines(&dir.join("tasks.csv")) {
        let (v, id): (u64, u32) = (r[0].parse().unwrap(), r[1].parse().unwrap());
        let (c, d, t, n) = (
            r[2].parse().unwrap(),
            r[5].parse::<u64>().unwrap(),
            r[6].parse::<u64>().unwrap(),
            r[8].parse().unwrap(),
        );
        tasks.insert((v, id), (c, t, if d == 0 { t } else { d }, n));
        ids.entry(v).or_default().push(id);
    }
    // jobs per variant and task: (job, start, end, exit)
    type J = (u64, Option<u64>, Option<u64>, String);
    let mut jobs: HashMap<(u64, u32), Vec<J>> = HashMap::new();
    for r in lines(&dir.join("jobs.csv")) {
        jobs.entry((r[0].parse().unwrap(), r[3].parse().unwrap()))
            .or_default()
            .push((r[4].parse().unwrap(), num(&r[5]), num(&r[6]), r[7].clone()));
    }
    let mut worst = (0u64, u64::MAX);
    for r in lines(&dir.join("variants.csv")) {
        let v: u64 = r[0].parse().unwrap();
        if r[1] == "bad" {
            e.bad += 1;
            continue;
        }
        e.done += 1;
        let mut ok = true;
        let mut u = 0.0;
        for id in &ids[&v] {
            let (c, t, d, n) = tasks[&(v, *id)];
            u += c as f64 / t as f64;
            let js = jobs.get(&(v, *id)).cloned().unwrap_or_default();
            ok &= js.len() as u64 == n;
            let anchor = js
                .iter()
                .filter_map(|j| j.1.map(|s| s as i64 - (j.0 as i64 - 1) * t as i64))
                .min();
            for (n, s, end, exit) in &js {
                *e.jobs.entry(*id).or_default() += 1;
                let release = anchor.map(|a| (a + (*n as i64 - 1) * t as i64) as u64);
                let mut miss = end.is_none() || exit == "EXIT_PERIOD";
                if let (Some(r), Some(x)) = (release, end) {
                    let resp = x - r;
                    e.response.entry(*id).or_default().push(resp);
                    miss |= resp > d;
                    if resp > worst.0 || worst.1 == u64::MAX {
                        worst = (resp, v);
                    }
                }
                if let (Some(s), Some(x)) = (s, end) {
                    e.execution.entry(*id).or_default().push(x - s);
                }
                if miss {
                    *e.missed.entry(*id).or_default() += 1;
                }
                ok &= !miss && exit == "EXIT";
            }
        }
        e.schedulable += u64::from(ok);
        let bin = (u / 0.1).round() as i64;
        let b = e.bins.entry(bin).or_default();
        b.0 += 1;
        b.1 += u64::from(ok);
    }
    e.worst_variant = worst.1;
    for v in e.response.values_mut().chain(e.execution.values_mut()) {
        v.sort_unstable();
    }
    e
}

/// What the test reads from the HTML: text of elements with an id, attributes of `tr.bin`
/// rows, ids of `svg` elements and how many series/job shapes each holds.
#[derive(Default, Debug)]
struct Page {
    text: HashMap<String, String>,
    bins: Vec<HashMap<String, String>>,
    svgs: Vec<(String, usize)>,
}

fn parse(html: &str) -> Page {
    let mut r = quick_xml::Reader::from_str(html);
    let mut page = Page::default();
    let mut open_id: Option<String> = None;
    loop {
        match r
            .read_event()
            .unwrap_or_else(|e| panic!("HTML is not well-formed at {}: {e}", r.buffer_position()))
        {
            Event::Eof => break,
            Event::Start(s) | Event::Empty(s) => {
                let attrs: HashMap<String, String> = s
                    .attributes()
                    .map(|a| {
                        let a = a.unwrap();
                        (
                            String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                            a.unescape_value().unwrap().into_owned(),
                        )
                    })
                    .collect();
                let name = s.name();
                match name.as_ref() {
                    b"svg" => page.svgs.push((attrs["id"].clone(), 0)),
                    b"tr" if attrs.get("class").is_some_and(|c| c == "bin") => {
                        page.bins.push(attrs.clone())
                    }
                    _ => {}
                }
                let shape = attrs
                    .get("class")
                    .is_some_and(|c| c == "series" || c == "job");
                if shape {
                    page.svgs.last_mut().unwrap().1 += 1;
                }
                open_id = attrs.get("id").cloned();
            }
            Event::Text(t) => {
                if let Some(id) = open_id.take() {
                    page.text.insert(id, t.unescape().unwrap().into_owned());
                }
            }
            _ => open_id = None,
        }
    }
    page
}

fn report(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    taskdist()
        .arg("report")
        .arg(dir)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn html_of(dir: &Path, extra: &[&str]) -> (String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.html");
    let o = report(dir, &out, extra);
    assert!(
        o.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (std::fs::read_to_string(&out).unwrap(), tmp)
}

#[test]
fn report_figures_equal_values_computed_from_the_rows() {
    let dir = run_dir();
    let e = expected(dir);
    assert_eq!(e.done, 90);
    let (html, _tmp) = html_of(dir, &[]);
    let p = parse(&html);
    assert_eq!(p.text["n-done"], e.done.to_string());
    assert_eq!(p.text["n-bad"], e.bad.to_string());
    assert_eq!(p.text["n-schedulable"], e.schedulable.to_string());
    for (k, v) in &e.events {
        assert_eq!(
            p.text[&format!("ev-{k}")],
            v.to_string(),
            "events of type {k}"
        );
    }
    assert_eq!(e.response.len(), 3, "three task ids");
    for (id, resp) in &e.response {
        let exec = &e.execution[id];
        for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99"), (1.0, "max")] {
            assert_eq!(
                p.text[&format!("resp-{id}-{name}")],
                pct(resp, q).to_string(),
                "response {name} of task {id}"
            );
            assert_eq!(
                p.text[&format!("exec-{id}-{name}")],
                pct(exec, q).to_string(),
                "execution {name} of task {id}"
            );
        }
        assert_eq!(p.text[&format!("jobs-{id}")], e.jobs[id].to_string());
        assert_eq!(
            p.text[&format!("missed-{id}")],
            e.missed.get(id).copied().unwrap_or(0).to_string()
        );
    }
    let all: Vec<&HashMap<String, String>> = p
        .bins
        .iter()
        .filter(|b| b["data-curve"] == "all targets")
        .collect();
    assert_eq!(all.len(), e.bins.len(), "one row per utilisation bin");
    for b in all {
        let x: f64 = b["data-x"].parse().unwrap();
        let (n, s) = e.bins[&((x * 10.0).round() as i64)];
        assert_eq!(b["data-n"], n.to_string(), "variants in bin {x}");
        assert_eq!(
            b["data-schedulable"],
            s.to_string(),
            "schedulable in bin {x}"
        );
    }
    // per-target curves add up to the overall one
    let per_target: u64 = p
        .bins
        .iter()
        .filter(|b| b["data-curve"] != "all targets")
        .map(|b| b["data-n"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_target, e.done);
    // every chart is there and has content; the worst response time is drawn
    for id in [
        "chart-throughput",
        "chart-failures",
        "chart-schedulability",
        "chart-response-cdf",
        "chart-execution",
        "chart-misses",
    ] {
        let (_, shapes) = p
            .svgs
            .iter()
            .find(|s| s.0 == id)
            .unwrap_or_else(|| panic!("chart {id} missing"));
        assert!(*shapes > 0, "chart {id} is empty");
    }
    let gantt = format!("chart-gantt-{}", e.worst_variant);
    let g = p.svgs.iter().find(|s| s.0 == gantt);
    assert!(
        g.is_some_and(|g| g.1 >= 9),
        "{gantt} with its 9 jobs: {:?}",
        p.svgs
    );
    assert!(
        !html.contains(" src=") && !html.contains("href="),
        "no external resources"
    );
    assert!(!html.contains("<script"), "self-contained, no scripts");
}

#[test]
fn chosen_variants_are_drawn_and_sqlite_gives_the_same_report() {
    let dir = run_dir();
    let (html, _t) = html_of(dir, &["--variant", "3", "--variant", "7"]);
    let p = parse(&html);
    let gantts: Vec<&str> = p
        .svgs
        .iter()
        .map(|s| s.0.as_str())
        .filter(|s| s.starts_with("chart-gantt-"))
        .collect();
    assert_eq!(gantts, ["chart-gantt-3", "chart-gantt-7"]);
    // the same directory without CSV files is read from results.sqlite
    let tmp = tempfile::tempdir().unwrap();
    let only_db = tmp.path().join("db");
    std::fs::create_dir(&only_db).unwrap();
    std::fs::copy(dir.join("results.sqlite"), only_db.join("results.sqlite")).unwrap();
    let (db_html, _t2) = html_of(&only_db, &["--variant", "3", "--variant", "7"]);
    let q = parse(&db_html);
    assert_eq!(q.text["o-source"], "sqlite");
    for (k, v) in &p.text {
        if k.starts_with("o-") {
            continue; // directory, source, command
        }
        assert_eq!(q.text.get(k), Some(v), "{k} differs between CSV and SQLite");
    }
    assert_eq!(p.bins, q.bins);
}

#[test]
fn svg_format_writes_one_file_per_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("charts");
    let o = report(run_dir(), &out, &["--format", "svg", "--variant", "0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "chart-execution.svg",
            "chart-failures.svg",
            "chart-gantt-0.svg",
            "chart-misses.svg",
            "chart-response-cdf.svg",
            "chart-schedulability.svg",
            "chart-throughput.svg"
        ]
    );
    for n in names {
        let text = std::fs::read_to_string(out.join(&n)).unwrap();
        let p = parse(&text);
        assert_eq!(p.svgs.len(), 1, "{n}");
    }
}

/// Luminance variance and count of clearly coloured pixels of a PNG, and its size.
fn png_stats(path: &Path) -> (u32, u32, f64, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    assert!(step >= 3, "{path:?}: not an RGB image");
    let lum: Vec<f64> = bytes
        .chunks(step)
        .map(|p| (u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) as f64 / 3.0)
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let var = lum.iter().map(|l| (l - mean) * (l - mean)).sum::<f64>() / lum.len() as f64;
    let coloured = bytes
        .chunks(step)
        .filter(|p| (i32::from(p[0]) - i32::from(p[2])).abs() > 80)
        .count();
    (info.width, info.height, var, coloured)
}

#[test]
fn png_format_writes_one_rendered_image_per_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("png");
    let o = report(run_dir(), &out, &["--format", "png", "--variant", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 7, "{names:?}");
    for n in &names {
        let (w, h, var, coloured) = png_stats(&out.join(n));
        if n != "chart-gantt-1.png" {
            // line charts are 760 x 360 SVG units, rendered at 2x
            assert_eq!((w, h), (1520, 720), "{n}");
        }
        assert!(var > 50.0, "{n} looks blank: variance {var}");
        if n != "chart-failures.png" {
            assert!(coloured > 200, "{n}: no coloured pixels ({coloured})");
        }
    }
}

#[test]
fn show_prints_the_task_set_and_its_jobs() {
    let dir = run_dir();
    let o = taskdist()
        .arg("show")
        .arg(dir)
        .args(["--variant", "4"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("variant 4: done"), "{text}");
    let jobs: Vec<Vec<String>> = lines(&dir.join("jobs.csv"))
        .into_iter()
        .filter(|r| r[0] == "4")
        .collect();
    let job_lines: Vec<&str> = text
        .split("jobs (target ms):\n")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .collect();
    assert_eq!(job_lines.len(), jobs.len());
    for (l, r) in job_lines.iter().zip(&jobs) {
        let cells: Vec<&str> = l.split_whitespace().collect();
        // task, job, release, start, end, exit, exec
        assert_eq!(cells[0], r[3]);
        assert_eq!(cells[1], r[4]);
        assert_eq!(cells[3], r[5]);
        assert_eq!(cells[4], r[6]);
        assert_eq!(cells[5], r[7]);
        assert_eq!(cells[6], r[8]);
    }
}

#[test]
fn bad_input_exits_with_2_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.html");
    let check = |o: std::process::Output, needle: &str| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
        assert!(!out.exists(), "no report written");
    };
    let missing = tmp.path().join("nothing-here");
    check(report(&missing, &out, &[]), "nothing-here");
    check(report(tmp.path(), &out, &[]), "no results here");
    // a directory with a file missing
    let partial = tmp.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    for f in ["events.csv", "variants.csv", "tasks.csv", "run.json"] {
        std::fs::copy(run_dir().join(f), partial.join(f)).unwrap();
    }
    check(report(&partial, &out, &[]), "jobs.csv: missing");
    check(
        report(run_dir(), &out, &["--variant", "12345"]),
        "variant 12345 is not in the results",
    );
    check(report(run_dir(), &out, &["--by", "colour"]), "--by colour");
    check(
        report(run_dir(), &out, &["--bin-width", "0"]),
        "--bin-width 0",
    );
    // jobs.csv whose first variant's rows were moved to the end: refused, naming the row
    let shuffled = tmp.path().join("shuffled");
    std::fs::create_dir(&shuffled).unwrap();
    for f in ["events.csv", "variants.csv", "tasks.csv", "run.json"] {
        std::fs::copy(run_dir().join(f), shuffled.join(f)).unwrap();
    }
    let jobs = std::fs::read_to_string(run_dir().join("jobs.csv")).unwrap();
    let mut rows: Vec<&str> = jobs.lines().collect();
    let first = rows[1].split(',').next().unwrap().to_owned();
    let n = rows[1..]
        .iter()
        .take_while(|r| r.split(',').next() == Some(first.as_str()))
        .count();
    let moved: Vec<&str> = rows.drain(1..1 + n).collect();
    rows.extend(moved);
    std::fs::write(shuffled.join("jobs.csv"), rows.join("\n") + "\n").unwrap();
    check(
        report(&shuffled, &out, &[]),
        "is not in the order of variants.csv",
    );
    let o = taskdist()
        .arg("show")
        .arg(run_dir())
        .args(["--variant", "90"])
        .output()
        .unwrap();
    check(o, "variant 90 is not in the results");
    // a file where a directory is expected
    check(
        report(&run_dir().join("run.json"), &out, &[]),
        "not a result directory",
    );
}

fn find_chromium() -> Result<PathBuf, String> {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    Err("no /usr/bin/chromium (Debian package chromium)".into())
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(chromium) = common::privileged::need(
        "report_renders_in_headless_chromium",
        "headless Chromium",
        find_chromium(),
    ) else {
        return;
    };
    let (html, tmp) = html_of(run_dir(), &[]);
    let page = tmp.path().join("page.html");
    std::fs::write(&page, html).unwrap();
    let shot = tmp.path().join("shot.png");
    let (mut command, _profile) = common::headless_chromium(&chromium).unwrap();
    let mut child = command
        .arg("--window-size=1200,3000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium: {status}");
    let (w, h, var, coloured) = png_stats(&shot);
    assert_eq!((w, h), (1200, 3000));
    assert!(var > 100.0, "screenshot looks blank: variance {var}");
    // colour of the series: some pixels are clearly not grey
    assert!(coloured > 500, "no coloured chart pixels: {coloured}");
}
