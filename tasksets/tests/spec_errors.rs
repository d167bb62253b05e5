//! Spec files: errors carry origin, line, column and what was expected.

use taskdist_tasksets::{catalog, Goal, Spec, SpecError};

/// Load `text` and return (line, column, message) of the error.
fn err(text: &str) -> (usize, usize, String) {
    match Spec::from_toml_str(text, "exp.toml") {
        Ok(_) => panic!("spec unexpectedly loaded:\n{text}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("exp.toml"),
                "error does not name the origin: {msg}"
            );
            let (l, c) = e.location().unwrap_or((0, 0));
            (l, c, msg)
        }
    }
}

#[test]
fn syntax_error_has_line() {
    let (line, _, msg) = err("name = \"x\"\n[[task]]\npkg = \"hey\"\npriority = = 3\n");
    assert_eq!(line, 4, "{msg}");
    let (line, _, msg) = err("name = \"x\"\n[[task]]\npkg = \"hey\"\npriority = [1, 2\n");
    assert_eq!(line, 5, "{msg}");
    assert!(msg.contains("expected `]`") && !msg.contains('\n'), "{msg}");
}

#[test]
fn unknown_key_lists_expected_keys() {
    let (line, col, msg) = err("[[task]]\npkg = \"hey\"\nperod_ms = 100\n");
    assert_eq!((line, col), (3, 1), "{msg}");
    assert!(
        msg.contains("perod_ms") && msg.contains("period_ms"),
        "{msg}"
    );
}

#[test]
fn out_of_range_value_points_at_the_value() {
    let (line, col, msg) = err("[[task]]\npkg = \"hey\"\n\npriority = [1, 200]\n");
    assert_eq!((line, col), (4, 12), "{msg}");
    assert!(
        msg.contains("priority") && msg.contains("200") && msg.contains("0..=127"),
        "{msg}"
    );
}

#[test]
fn random_draw_beyond_32_bits_is_rejected_at_load() {
    let (line, _, msg) =
        err("[[task]]\npkg = \"hey\"\nperiod_ms = { uniform = [1, 5000000000] }\n");
    assert_eq!(line, 3, "{msg}");
    assert!(
        msg.contains("period_ms") && msg.contains("5000000000"),
        "{msg}"
    );
}

#[test]
fn arbitrary_deadlines_beyond_32_bits_are_rejected() {
    let (line, _, msg) =
        err("[[task]]\npkg = \"hey\"\nperiod_ms = 4000000000\ndeadline_ms = \"arbitrary\"\n");
    assert_eq!(line, 4, "{msg}");
}

#[test]
fn bad_value_forms() {
    let cases = [
        ("priority = { from = 5, to = 1 }", "from <= to"),
        ("priority = { from = 1, to = 5, step = 0 }", "step"),
        ("priority = { uniform = [1] }", "two bounds"),
        (
            "priority = { uniform = [1, 2], choice = [3] }",
            "exactly one",
        ),
        ("priority = { between = [1, 2] }", "unknown field"),
        ("priority = []", "empty list"),
        ("priority = -3", "negative"),
        ("priority = 1.5", "integer"),
        ("priority = true", "expected"),
        ("period_ms = { log_uniform = [0, 10] }", "at least 1"),
        ("numberofjobs = 0", "1..="),
        ("deadline_ms = \"soon\"", "implicit"),
        ("quota = \"12Q\"", "K, M or G"),
        ("count = { uniform = [1, 3] }", "random count"),
        ("count = 0", "1..="),
        ("config = { \"1x\" = 3 }", "config"),
        ("config = { arg1 = \"a b\" }", "whitespace"),
        ("pkg2 = 1", "unknown field"),
    ];
    for (line, want) in cases {
        let text = format!("[[task]]\npkg = \"hey\"\n{line}\n");
        let (l, _, msg) = err(&text);
        assert_eq!(l, 3, "{line}: {msg}");
        assert!(msg.contains(want), "{line}: expected {want:?} in {msg}");
    }
}

#[test]
fn pkg_errors() {
    let (l, _, msg) = err("[[task]]\npkg = \"a_name_too_long_x\"\n");
    assert_eq!(l, 2);
    assert!(msg.contains("pkg") && msg.contains("15"), "{msg}");
    let (_, _, msg) = err("[[task]]\npkg = { from = 1, to = 3 }\n");
    assert!(msg.contains("binary name"), "{msg}");
    let (_, _, msg) = err("[[task]]\npriority = 3\n");
    assert!(msg.contains("pkg"), "{msg}");
}

#[test]
fn whole_spec_errors() {
    let e = Spec::from_toml_str("name = \"empty\"\n", "e.toml").unwrap_err();
    assert!(matches!(e, SpecError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("[[task]]"));
    let (l, _, msg) = err("samples = 3\n[[task]]\npkg = \"hey\"\n");
    assert_eq!(l, 1);
    assert!(msg.contains("random"), "{msg}");
    let (l, _, msg) =
        err("samples = 0\n[[task]]\npkg = \"hey\"\npriority = { uniform = [1, 2] }\n");
    assert_eq!(l, 1);
    assert!(msg.contains("unbounded"), "{msg}");
}

#[test]
fn order_errors() {
    let (l, _, msg) = err("order = \"random\"\n[[task]]\npkg = \"hey\"\n");
    assert_eq!(l, 1);
    assert!(msg.contains("shuffled"), "{msg}");
    let (l, _, msg) = err("samples = \"unbounded\"\norder = \"shuffled\"\n[[task]]\npkg = \"hey\"\npriority = { uniform = [1, 2] }\n");
    assert_eq!(l, 2);
    assert!(msg.contains("finite"), "{msg}");
}

#[test]
fn utilisation_errors() {
    let base = "[[task]]\npkg = \"hey\"\ncount = 2\n";
    let (l, _, msg) = err(&format!("{base}utilisation = {{ total = 2.5 }}\n"));
    assert_eq!(l, 4);
    assert!(msg.contains("utilisation.total"), "{msg}");
    let (_, _, msg) = err(&format!(
        "{base}utilisation = {{ total = 0.5, method = \"magic\" }}\n"
    ));
    assert!(msg.contains("randfixedsum"), "{msg}");
    let (_, _, msg) = err(&format!(
        "{base}utilisation = {{ total = 0.5, max = 1.5 }}\n"
    ));
    assert!(msg.contains("(0, 1]"), "{msg}");
    let (l, _, msg) = err(&format!(
        "{base}executiontime_ms = 5\nutilisation = {{ total = 0.5 }}\n"
    ));
    assert_eq!(l, 4);
    assert!(msg.contains("derived"), "{msg}");
}

#[test]
fn load_finds_catalog_then_files_then_lists_the_catalog() {
    assert_eq!(Spec::load("hey").unwrap().name(), "hey");
    let dir = std::env::temp_dir().join(format!("taskdist-spec-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mine.toml");
    std::fs::write(&path, "[[task]]\npkg = \"pi\"\nnumberofjobs = 4\n").unwrap();
    let spec = Spec::load(path.to_str().unwrap()).unwrap();
    assert_eq!(spec.name(), "mine");
    assert_eq!(spec.space().get(0).unwrap().tasks[0].numberofjobs, 4);
    std::fs::write(&path, "[[task]]\npkg = \"pi\"\nnumberofjobs = 0\n").unwrap();
    let e = Spec::load(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        e.starts_with(path.to_str().unwrap()) && e.contains(":3:"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let e = Spec::load("no-such-spec").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SpecError::NotFound { .. }));
    for entry in catalog::entries() {
        assert!(msg.contains(entry.name), "{msg}");
    }
}

#[test]
fn spec_carries_metadata_and_admission_control() {
    let text = "name = \"n\"\ndescription = \"d\"\nseed = 12\n[admission]\ngoal = \"fairness\"\nquery_interval_ms = 250\n[[task]]\npkg = \"hey\"\n";
    let s = Spec::from_toml_str(text, "o").unwrap();
    assert_eq!(
        (s.name(), s.description(), s.seed(), s.text(), s.origin()),
        ("n", "d", 12, text, "o")
    );
    let ac = s.admission().unwrap();
    assert_eq!((ac.goal, ac.query_interval_ms), (Goal::Fairness, 250));
    let (l, _, msg) =
        err("[admission]\ngoal = \"speed\"\nquery_interval_ms = 1\n[[task]]\npkg = \"hey\"\n");
    assert_eq!(l, 2, "{msg}");
    assert!(msg.contains("fairness"), "{msg}");
}
