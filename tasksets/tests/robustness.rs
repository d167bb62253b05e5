//! User input never panics: arbitrary spec text and arbitrary XML give values or errors.

use proptest::prelude::*;
use taskdist_tasksets::{AdmissionControl, Spec, TaskSet};

/// Lines drawn from the spec vocabulary, so that the parser gets past TOML syntax often.
fn spec_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("pkg"),
        Just("count"),
        Just("priority"),
        Just("period_ms"),
        Just("deadline_ms"),
        Just("executiontime_ms"),
        Just("numberofjobs"),
        Just("quota"),
        Just("config"),
        Just("utilisation"),
        Just("samples"),
        Just("seed"),
        Just("order"),
        Just("independent"),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0u32..200).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        Just("\"hey\"".to_string()),
        Just("\"unbounded\"".to_string()),
        Just("\"shuffled\"".to_string()),
        Just("\"arbitrary\"".to_string()),
        Just("\"4M\"".to_string()),
        Just("true".to_string()),
        (0u64..300, 0u64..300, 0u64..5)
            .prop_map(|(a, b, s)| format!("{{ from = {a}, to = {b}, step = {s} }}")),
        (0u64..300, 0u64..300).prop_map(|(a, b)| format!("{{ uniform = [{a}, {b}] }}")),
        (0u64..300, 0u64..300).prop_map(|(a, b)| format!("{{ log_uniform = [{a}, {b}] }}")),
        Just("{ total = 0.5 }".to_string()),
        Just("{ arg1 = [1, 2] }".to_string()),
        Just("[]".to_string()),
        "[ -~]{0,12}",
    ];
    prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        Just("[[task]]".to_string()),
        Just("[admission]".to_string()),
        "[ -~]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn spec_parser_never_panics(lines in proptest::collection::vec(spec_line(), 0..12)) {
        let text = lines.join("\n");
        if let Ok(spec) = Spec::from_toml_str(&text, "fuzz.toml") {
            // A spec that loads yields valid variants at its ends.
            let space = spec.space();
            let last = space.len().addressable().map_or(u64::MAX, |n| n.saturating_sub(1));
            for i in [0, last] {
                let set = space.get(i).unwrap();
                prop_assert!(set.validate().is_ok());
            }
        }
    }

    #[test]
    fn xml_readers_never_panic(text in "[<>/a-z0-9 =\"&;!?-]{0,200}") {
        let _ = TaskSet::from_xml(&text);
        let _ = AdmissionControl::from_xml(&text);
    }

    #[test]
    fn mutated_task_set_xml_never_panics(cut in 0usize..400, byte in any::<u8>()) {
        let xml = Spec::load("pi").unwrap().space().get(3).unwrap().to_xml();
        let mut bytes = xml.into_bytes();
        let at = cut % bytes.len();
        bytes[at] = byte;
        let text = String::from_utf8_lossy(&bytes);
        let _ = TaskSet::from_xml(&text);
    }
}
