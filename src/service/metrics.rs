//! `GET /metrics`: per-experiment and per-target figures in Prometheus' text format
//! (OpenMetrics), built with the prometheus-client crate at each scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::{ExperimentView, TargetView};

type Labels = Vec<(&'static str, String)>;

/// A label value escaped as the text format requires (the crate writes values as given).
fn esc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The text of one scrape.
pub(crate) fn render(
    exps: &[ExperimentView],
    targets: &[TargetView],
    life: &crate::pool::LifecycleStats,
) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("taskdist");
    let done = Family::<Labels, Counter>::default();
    let bad = Family::<Labels, Counter>::default();
    let planned = Family::<Labels, Gauge>::default();
    let queued = Family::<Labels, Gauge>::default();
    let running = Family::<Labels, Gauge>::default();
    let rate = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let state = Family::<Labels, Gauge>::default();
    for e in exps {
        let l: Labels = vec![("experiment", e.id.to_string()), ("name", esc(&e.name))];
        done.get_or_create(&l).inc_by(e.done);
        bad.get_or_create(&l).inc_by(e.bad);
        if let Some(p) = e.planned {
            planned.get_or_create(&l).set(p as i64);
        }
        queued.get_or_create(&l).set(e.queued as i64);
        running.get_or_create(&l).set(e.running as i64);
        rate.get_or_create(&l).set(e.rate_per_s);
        let mut ls = l.clone();
        ls.push(("state", e.state.as_str().to_owned()));
        state.get_or_create(&ls).set(1);
    }
    reg.register(
        "experiment_variants_done",
        "Variants of the experiment with a completed outcome",
        done,
    );
    reg.register(
        "experiment_variants_bad",
        "Variants of the experiment declared bad",
        bad,
    );
    reg.register(
        "experiment_variants_planned",
        "Variants the experiment selects (absent when endless)",
        planned,
    );
    reg.register(
        "experiment_variants_queued",
        "Variants waiting for a target",
        queued,
    );
    reg.register(
        "experiment_attempts_running",
        "Attempts running now",
        running,
    );
    reg.register(
        "experiment_rate_per_second",
        "Completed variants per second in the current run",
        rate,
    );
    reg.register(
        "experiment_state",
        "1 for the experiment's current state",
        state,
    );

    let completed = Family::<Labels, Counter>::default();
    let failed = Family::<Labels, Counter>::default();
    let busy = Family::<Labels, Counter<f64, AtomicU64>>::default();
    let tstate = Family::<Labels, Gauge>::default();
    for t in targets {
        let l: Labels = vec![("target", esc(&t.target)), ("group", esc(&t.group))];
        completed.get_or_create(&l).inc_by(t.completed);
        failed.get_or_create(&l).inc_by(t.failed);
        busy.get_or_create(&l).inc_by(t.busy_s);
        let mut ls = l.clone();
        ls.push(("state", esc(&t.state)));
        tstate.get_or_create(&ls).set(1);
    }
    reg.register(
        "target_tasksets_completed",
        "Task-sets the target completed (all experiments)",
        completed,
    );
    reg.register(
        "target_attempts_failed",
        "Failed attempts on the target",
        failed,
    );
    reg.register(
        "target_busy_seconds",
        "Seconds the target spent on completed task-sets",
        busy,
    );
    reg.register("target_state", "1 for the target's current state", tstate);

    let instances = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    for (event, n) in [
        ("started", life.launched),
        ("stopped", life.stopped),
        ("idle_stopped", life.idle_stopped),
        ("failed", life.failed),
        ("restarted", life.restarted),
    ] {
        instances.get_or_create(&vec![("event", event)]).inc_by(n);
    }
    reg.register(
        "launched_instances",
        "Launched target instances by event (started, stopped, idle_stopped, failed, restarted)",
        instances,
    );
    let running_instances = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    running_instances.set(life.running as i64);
    reg.register(
        "launched_instances_running",
        "Launched target instances running now",
        running_instances,
    );
    let checks = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    checks
        .get_or_create(&vec![("result", "passed")])
        .inc_by(life.health_passed);
    checks
        .get_or_create(&vec![("result", "failed")])
        .inc_by(life.health_failed);
    reg.register("health_checks", "Health checks by result", checks);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(esc("x\ny"), "x\\ny");
        assert_eq!(esc("plain"), "plain");
    }
}
