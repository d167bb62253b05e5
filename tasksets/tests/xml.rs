//! XML description: fast writer vs quick-xml reference, round trips, validation errors.

use proptest::prelude::*;
use taskdist_tasksets::xml::{parse_taskset, write_taskset_reference};
use taskdist_tasksets::{AdmissionControl, Goal, Task, TaskSet, XmlError};

fn arb_task(id: u32) -> impl Strategy<Value = Task> {
    let u32v = 0..=u64::from(u32::MAX);
    (
        (
            u32v.clone(),
            u32v.clone(),
            0u32..=127,
            u32v.clone(),
            1..=u64::from(u32::MAX),
        ),
        (
            u32v.clone(),
            1u32..=u32::MAX,
            prop_oneof![
                u32v.clone(),
                (0u64..4096).prop_map(|k| k << 10),
                (0u64..4096).prop_map(|k| k << 20),
                (0u64..4).prop_map(|k| k << 30),
            ],
        ),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        "[a-z_][a-z0-9_]{0,14}",
        proptest::collection::vec(("[a-z_][a-z0-9_-]{0,8}", "[!-~]{0,12}"), 0..4),
    )
        .prop_map(
            move |((e, c, p, d, per), (o, j, q), (caps, cores, co), pkg, config)| {
                let mut t = Task::new(id, pkg);
                t.executiontime_ms = e;
                t.criticaltime_ms = c;
                t.priority = p;
                t.deadline_ms = d;
                t.period_ms = per;
                t.offset_ms = o;
                t.numberofjobs = j;
                t.quota_bytes = q;
                t.caps = caps;
                t.cores = cores;
                t.coreoffset = co;
                // Order (and repetition) of config entries is kept by writer and reader alike.
                t.config = config;
                t
            },
        )
}

fn arb_set() -> impl Strategy<Value = TaskSet> {
    (0usize..5).prop_flat_map(|n| {
        (0..n as u32)
            .map(arb_task)
            .collect::<Vec<_>>()
            .prop_map(|tasks| TaskSet { tasks })
    })
}

proptest! {
    #[test]
    fn fast_writer_matches_quick_xml_reference(set in arb_set()) {
        prop_assert_eq!(set.to_xml(), write_taskset_reference(&set));
    }

    #[test]
    fn xml_round_trip(set in arb_set()) {
        prop_assume!(set.validate().is_ok());
        let xml = set.to_xml();
        let back = parse_taskset(&xml).unwrap();
        prop_assert_eq!(&back, &set);
        prop_assert_eq!(back.to_xml(), xml);
    }

    #[test]
    fn admission_round_trip(goal in prop_oneof![Just(Goal::Fairness), Just(Goal::Utilization), Just(Goal::None)], qi in any::<u32>()) {
        let ac = AdmissionControl { goal, query_interval_ms: qi };
        prop_assert_eq!(AdmissionControl::from_xml(&ac.to_xml()).unwrap(), ac);
    }
}

#[test]
fn protocol_example_is_reproduced_byte_for_byte() {
    let mut a = Task::new(0, "hey");
    a.period_ms = 1000;
    a.numberofjobs = 3;
    let mut b = Task::new(1, "pi");
    b.criticaltime_ms = 1500;
    b.priority = 20;
    b.period_ms = 2000;
    b.offset_ms = 500;
    b.numberofjobs = 2;
    b.quota_bytes = 5 << 20;
    b.config = vec![("arg1".into(), "100000".into())];
    let set = TaskSet::new(vec![a, b]).unwrap();
    let expected = "<taskset><periodictask><id>0</id><executiontime>99999999</executiontime><criticaltime>0</criticaltime><priority>10</priority><deadline>0</deadline><period>1000</period><offset>0</offset><numberofjobs>3</numberofjobs><quota>1M</quota><caps>235</caps><cores>2</cores><coreoffset>1</coreoffset><pkg>hey</pkg><config></config></periodictask><periodictask><id>1</id><executiontime>99999999</executiontime><criticaltime>1500</criticaltime><priority>20</priority><deadline>0</deadline><period>2000</period><offset>500</offset><numberofjobs>2</numberofjobs><quota>5M</quota><caps>235</caps><cores>2</cores><coreoffset>1</coreoffset><pkg>pi</pkg><config><arg1>100000</arg1></config></periodictask></taskset>";
    assert_eq!(set.to_xml(), expected);
    assert_eq!(write_taskset_reference(&set), expected);
    assert_eq!(TaskSet::from_xml(expected).unwrap(), set);
}

#[test]
fn config_values_are_escaped() {
    let mut t = Task::new(0, "pi");
    t.config = vec![("arg1".into(), "a<b&c>\"'".into())];
    let set = TaskSet::new(vec![t]).unwrap();
    let xml = set.to_xml();
    assert!(
        xml.contains("<arg1>a&lt;b&amp;c&gt;&quot;&apos;</arg1>"),
        "{xml}"
    );
    assert_eq!(xml, write_taskset_reference(&set));
    assert_eq!(TaskSet::from_xml(&xml).unwrap(), set);
}

#[test]
fn reader_accepts_any_root_whitespace_and_ignores_other_children() {
    let xml = "<tasks>\n  <comment>x</comment>\n  <periodictask>\n <id>0</id><executiontime>1</executiontime><criticaltime>0</criticaltime><priority>3</priority><deadline>0</deadline><period>10</period><offset>0</offset><numberofjobs>1</numberofjobs><quota>4096</quota><caps>235</caps><cores>2</cores><coreoffset>1</coreoffset><pkg>hey</pkg><config/></periodictask></tasks>";
    let set = TaskSet::from_xml(xml).unwrap();
    assert_eq!(set.tasks.len(), 1);
    assert_eq!(set.tasks[0].quota_bytes, 4096);
    assert_eq!(set.tasks[0].priority, 3);
}

#[test]
fn reader_errors_name_the_problem() {
    let full = TaskSet::new(vec![Task::new(0, "hey")]).unwrap().to_xml();
    let missing = full.replace("<caps>235</caps>", "");
    assert!(matches!(
        TaskSet::from_xml(&missing),
        Err(XmlError::MissingField {
            task: 0,
            field: "caps"
        })
    ));
    let bad = full.replace("<period>1000</period>", "<period>ten</period>");
    let err = TaskSet::from_xml(&bad).unwrap_err().to_string();
    assert!(err.contains("<period>") && err.contains("ten"), "{err}");
    let bad_quota = full.replace("<quota>1M</quota>", "<quota>1X</quota>");
    assert!(matches!(
        TaskSet::from_xml(&bad_quota),
        Err(XmlError::BadValue { .. })
    ));
    let invalid = full.replace("<priority>10</priority>", "<priority>200</priority>");
    assert!(
        matches!(TaskSet::from_xml(&invalid), Err(XmlError::Invalid(e)) if e.field == "priority")
    );
    assert!(matches!(
        TaskSet::from_xml("<taskset><periodictask>"),
        Err(XmlError::Structure(_))
    ));
    assert!(matches!(
        TaskSet::from_xml("<a></b>"),
        Err(XmlError::Syntax { .. })
    ));
    assert!(matches!(TaskSet::from_xml(""), Err(XmlError::Structure(_))));
    let twice = full.replace("<pkg>hey</pkg>", "<pkg>hey</pkg><pkg>pi</pkg>");
    assert!(matches!(
        TaskSet::from_xml(&twice),
        Err(XmlError::Structure(_))
    ));
}

#[test]
fn admission_reader() {
    let doc = "<optimize><goal><fairness><apply>0</apply></fairness><utilization><apply>1</apply></utilization></goal><query_interval>500</query_interval></optimize>";
    let ac = AdmissionControl::from_xml(doc).unwrap();
    assert_eq!(
        ac,
        AdmissionControl {
            goal: Goal::Utilization,
            query_interval_ms: 500
        }
    );
    // fairness wins when both apply
    let both = doc.replace("<apply>0</apply>", "<apply>1</apply>");
    assert_eq!(
        AdmissionControl::from_xml(&both).unwrap().goal,
        Goal::Fairness
    );
    let no_interval = "<optimize><goal></goal></optimize>";
    assert!(AdmissionControl::from_xml(no_interval).is_err());
    assert!(AdmissionControl::from_xml("<taskset></taskset>").is_err());
}

#[test]
fn validation_errors_name_task_and_field() {
    let check = |f: fn(&mut Task), field: &str| {
        let mut t = Task::new(4, "hey");
        f(&mut t);
        let e = t.validate().unwrap_err();
        assert_eq!((e.task, e.field), (4, field), "{e}");
        assert!(e.to_string().contains("task 4") && e.to_string().contains(field));
    };
    check(|t| t.pkg = "a_very_long_binary".into(), "pkg");
    check(|t| t.pkg = String::new(), "pkg");
    check(|t| t.pkg = "a b".into(), "pkg");
    check(|t| t.numberofjobs = 0, "numberofjobs");
    check(|t| t.priority = 128, "priority");
    check(|t| t.period_ms = 0, "period");
    check(|t| t.period_ms = 1 << 32, "period");
    check(|t| t.executiontime_ms = 1 << 32, "executiontime");
    check(|t| t.quota_bytes = 8 << 30, "quota");
    check(|t| t.config = vec![("1arg".into(), "1".into())], "config");
    check(|t| t.config = vec![("arg1".into(), "1 2".into())], "config");
    let dup = TaskSet::new(vec![Task::new(0, "hey"), Task::new(0, "pi")]).unwrap_err();
    assert_eq!(dup.field, "id");
}
