//! Spec files: the scheduling fields `priority`, `weight` and `[requires]`.

use taskdist_tasksets::Spec;

fn load(text: &str) -> Spec {
    Spec::from_toml_str(text, "exp.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn err(text: &str) -> (Option<(usize, usize)>, String) {
    match Spec::from_toml_str(text, "exp.toml") {
        Ok(_) => panic!("spec unexpectedly loaded:\n{text}"),
        Err(e) => (e.location(), e.to_string()),
    }
}

const TASK: &str = "[[task]]\npkg = \"hey\"\n";

#[test]
fn absent_fields_are_none() {
    let s = load(TASK);
    assert_eq!((s.priority(), s.weight()), (None, None));
    assert!(s.requires().is_none());
}

#[test]
fn fields_are_read() {
    let s = load(&format!(
        "priority = -3\nweight = 0.25\n[requires]\nboard = [\"a\", \"b\"]\ncores = \">= 2\"\nfpu = true\n{TASK}"
    ));
    assert_eq!(s.priority(), Some(-3));
    assert_eq!(s.weight(), Some(0.25));
    let r = s.requires().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r["board"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["fpu"].as_bool(), Some(true));
    // An integer weight is a number too; the task's own `priority` is a different key.
    let s = load("weight = 3\n[[task]]\npkg = \"hey\"\npriority = 5\n");
    assert_eq!((s.priority(), s.weight()), (None, Some(3.0)));
}

#[test]
fn the_fingerprinted_text_holds_the_fields() {
    let text = format!("priority = 1\n{TASK}");
    assert_eq!(load(&text).text(), text);
}

#[test]
fn bad_weights_have_a_place_and_say_what_was_expected() {
    for (value, shown) in [("0", "0"), ("-1.5", "-1.5"), ("inf", "inf"), ("nan", "NaN")] {
        let (place, msg) = err(&format!("name = \"x\"\nweight = {value}\n{TASK}"));
        assert_eq!(place, Some((2, 10)), "{msg}");
        assert_eq!(
            msg,
            format!(
                "exp.toml:2:10: `weight`: {shown} is not a positive number; expected e.g. 1 or 2.5"
            )
        );
    }
    let (place, msg) = err(&format!("weight = \"heavy\"\n{TASK}"));
    assert_eq!(place.map(|p| p.0), Some(1), "{msg}");
    assert!(msg.contains("expected"), "{msg}");
}

#[test]
fn bad_priority_and_requires_types_have_a_place() {
    let (place, msg) = err(&format!("\npriority = 1.5\n{TASK}"));
    assert_eq!(place.map(|p| p.0), Some(2), "{msg}");
    assert!(msg.contains("expected"), "{msg}");
    let (place, msg) = err(&format!("requires = \"board=a\"\n{TASK}"));
    assert_eq!(place.map(|p| p.0), Some(1), "{msg}");
    let (place, msg) = err(&format!("priorty = 1\n{TASK}"));
    assert_eq!(place, Some((1, 1)), "{msg}");
    assert!(
        msg.contains("priority") && msg.contains("weight") && msg.contains("requires"),
        "{msg}"
    );
}
