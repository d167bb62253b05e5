//! Property-based fuzzing of the frame decoders and XML parsers: random and mutated bytes
//! must never panic, decoders must agree however the stream is split, and valid documents
//! must round-trip. Run longer with `PROPTEST_CASES=100000 cargo test --release --test target_fuzz`.

use proptest::prelude::*;
use taskdist::handlers::EventKind;
use taskdist::protocol::frame::{self, Expect, ServerMsg};
use taskdist::protocol::xml;
use taskdist::{Task, TaskSet};

const KINDS: [&str; 11] = [
    "START",
    "EXIT",
    "EXIT_CRITICAL",
    "EXIT_PERIOD",
    "EXIT_EXTERNAL",
    "EXIT_ERROR",
    "OUT_OF_QUOTA",
    "OUT_OF_CAPS",
    "NOT_SCHEDULED",
    "JOBS_DONE",
    "SOMETHING_NEW",
];

fn doc_of(events: &[(usize, u32, u64)]) -> String {
    let mut d = String::from("<profile>\n\t<events>\n");
    for (k, id, t) in events {
        d.push_str(&format!(
            "\t\t<event type=\"{}\" task-id=\"{id}\" time-stamp=\"{t}\"/>\n",
            KINDS[*k]
        ));
    }
    d.push_str("\t</events>\n</profile>");
    d
}

fn events_strategy() -> impl Strategy<Value = Vec<(usize, u32, u64)>> {
    prop::collection::vec((0..KINDS.len(), any::<u32>(), any::<u64>()), 0..40)
}

/// Decode a whole stream of server items with a reader that gets `chunks` bytes at a time.
fn decode_stream(bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, frame::FrameError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some((msg, n)) = frame::decode_server(&buf, Expect::Frames, 1 << 20)? {
            match msg {
                ServerMsg::Frame(doc) => out.push(doc.to_vec()),
                other => out.push(format!("{other:?}").into_bytes()),
            }
            buf.drain(..n);
        }
    }
    Ok(out)
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), cap in 0usize..2000) {
        for expect in [Expect::Frames, Expect::GoSend, Expect::Echo, Expect::GoSendOrEcho] {
            if let Ok(Some((_, n))) = frame::decode_server(&bytes, expect, cap) {
                prop_assert!(n <= bytes.len());
            }
        }
        if let Ok(Some((_, n))) = frame::decode_client(&bytes, cap, 16) {
            prop_assert!(n <= bytes.len());
        }
        if let Ok(Some((_, n))) = frame::decode_binary(&bytes, cap) {
            prop_assert!(n <= bytes.len());
        }
        let _ = xml::parse_profile(&bytes);
        let _ = xml::parse_live(&bytes);
        let _ = xml::parse_taskset(&bytes);
        let _ = xml::parse_optimize(&bytes);
    }

    #[test]
    fn profiles_round_trip_with_trailing_bytes(events in events_strategy(), tail in prop::collection::vec(any::<u8>(), 0..20)) {
        let mut doc = doc_of(&events).into_bytes();
        doc.extend_from_slice(b"\n\0");
        doc.extend_from_slice(&tail);
        let parsed = xml::parse_profile(&doc).unwrap();
        prop_assert_eq!(parsed.len(), events.len());
        for (p, (k, id, t)) in parsed.iter().zip(&events) {
            prop_assert_eq!(&p.kind, &EventKind::from_wire(KINDS[*k]));
            prop_assert_eq!(p.task_id, *id);
            prop_assert_eq!(p.time_stamp_ms, *t);
        }
    }

    #[test]
    fn mutated_profiles_never_panic(events in events_strategy(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut doc = doc_of(&events).into_bytes();
        for (i, b) in flips {
            let at = i.index(doc.len());
            doc[at] = b;
        }
        let mut out = Vec::new();
        if xml::parse_profile_into(&doc, &mut out).is_err() {
            prop_assert!(out.is_empty());
        }
    }

    #[test]
    fn split_streams_decode_alike(docs in prop::collection::vec(events_strategy(), 1..6), chunk in 1usize..64) {
        let mut stream = Vec::new();
        for d in &docs {
            frame::encode_frame(&mut stream, doc_of(d).as_bytes());
        }
        let whole = decode_stream(&stream, stream.len()).unwrap();
        let split = decode_stream(&stream, chunk).unwrap();
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(whole.len(), docs.len());
    }

    #[test]
    fn tasksets_round_trip(n in 1usize..6, period in 1u64..100_000, jobs in 1u32..1000, prio in 0u32..=127, arg in 0u64..1_000_000) {
        let tasks: Vec<Task> = (0..n as u32).map(|i| {
            let mut t = Task::new(i, if i % 2 == 0 { "hey" } else { "pi" });
            t.period_ms = period + u64::from(i);
            t.numberofjobs = jobs;
            t.priority = prio;
            t.config.push(("arg1".into(), arg.to_string()));
            t
        }).collect();
        let set = TaskSet::new(tasks).unwrap();
        prop_assert_eq!(xml::parse_taskset(set.to_xml().as_bytes()).unwrap(), set.tasks);
    }

    #[test]
    fn mutated_tasksets_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut t = Task::new(0, "pi");
        t.config.push(("arg1".into(), "100".into()));
        let mut doc = TaskSet::new(vec![t, Task::new(1, "hey")]).unwrap().to_xml().into_bytes();
        for (i, b) in flips {
            let at = i.index(doc.len());
            doc[at] = b;
        }
        let _ = xml::parse_taskset(&doc);
    }
}
