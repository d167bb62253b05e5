//! Bytes on the wire: encoders, decoders and a scripted server that checks every byte the
//! client sends, including pushes where GO_SEND and the AVAILABLE echo are expected.

use std::collections::HashSet;
use std::time::Duration;

use taskdist::handlers::EventKind;
use taskdist::protocol::frame::{self, ClientMsg, Command, Expect, FrameError, ServerMsg};
use taskdist::protocol::{Binaries, Dialect, Session, SessionConfig};
use taskdist::{AdmissionControl, Goal, Task, TaskSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[test]
fn command_words_are_little_endian() {
    let cases: [(Command, [u8; 4]); 11] = [
        (Command::SendDescs, [0xE5, 0x0D, 0, 0]),
        (Command::Clear, [0xE6, 0x0D, 0, 0]),
        (Command::SendBinaries, [0x1E, 0xF1, 0xE5, 0x0D]),
        (Command::GoSend, [0x90, 0, 0, 0]),
        (Command::Start, [0xE5, 0x4D, 0x51, 0x00]),
        (Command::Stop, [0xE6, 0x4D, 0x51, 0x00]),
        (Command::GetProfile, [0xD1, 0x59, 0x01, 0x00]),
        (Command::GetLive, [0xD2, 0x59, 0x01, 0x00]),
        (Command::Reboot, [0xD3, 0x59, 0x01, 0x00]),
        (Command::Available, [0xAA, 0xAA, 0x0A, 0x00]),
        (Command::Optimize, [0x74, 0x70, 0x6F, 0x00]),
    ];
    for (cmd, bytes) in cases {
        let mut v = Vec::new();
        frame::encode_command(&mut v, cmd);
        assert_eq!(v, bytes, "{cmd}");
    }
}

#[test]
fn payload_commands_and_binary_header() {
    let mut v = Vec::new();
    frame::encode_send_descs(&mut v, b"<taskset/>").unwrap();
    assert_eq!(&v[..8], &[0xE5, 0x0D, 0, 0, 10, 0, 0, 0]);
    assert_eq!(&v[8..], b"<taskset/>");

    let ac = AdmissionControl {
        goal: Goal::Fairness,
        query_interval_ms: 1000,
    };
    let mut v = Vec::new();
    frame::encode_optimize(&mut v, ac.to_xml().as_bytes()).unwrap();
    assert_eq!(&v[..4], &[0x74, 0x70, 0x6F, 0x00]);
    assert_eq!(
        u32::from_le_bytes([v[4], v[5], v[6], v[7]]) as usize,
        v.len() - 8
    );

    let mut v = Vec::new();
    frame::encode_send_binaries(&mut v, 2);
    assert_eq!(v, [0x1E, 0xF1, 0xE5, 0x0D, 2, 0, 0, 0]);

    let mut v = Vec::new();
    frame::encode_binary(&mut v, "hey", b"\x7fELF!").unwrap();
    let mut want = b"hey".to_vec();
    want.resize(16, 0);
    want.extend_from_slice(&[5, 0, 0, 0]);
    want.extend_from_slice(b"\x7fELF!");
    assert_eq!(v, want);

    let mut v = Vec::new();
    assert!(matches!(
        frame::encode_binary(&mut v, "sixteen_bytes_xx", b""),
        Err(FrameError::BadName { .. })
    ));
    assert!(frame::encode_binary(&mut v, "fifteen_bytes_x", b"").is_ok());
    assert!(frame::encode_binary(&mut v, "", b"").is_err());
}

#[test]
fn server_frames_decode_and_are_capped() {
    let f = frame::encode_frame_vec(b"<profile></profile>");
    assert_eq!(&f[..4], &[21, 0, 0, 0]);
    assert!(f.ends_with(b"</profile>\n\0"));
    let mut two = f.clone();
    frame::encode_command(&mut two, Command::Available);
    let (m, n) = frame::decode_server(&two, Expect::Echo, 100)
        .unwrap()
        .unwrap();
    assert!(matches!(m, ServerMsg::Frame(_)));
    let (m, _) = frame::decode_server(&two[n..], Expect::Echo, 100)
        .unwrap()
        .unwrap();
    assert_eq!(m, ServerMsg::AvailableEcho);
    // announced size above the cap: error, not allocation
    assert_eq!(
        frame::decode_server(&[0, 0, 0, 0x10], Expect::Frames, 100_000),
        Err(FrameError::TooLarge {
            what: "server frame",
            size: 0x1000_0000,
            max: 100_000
        })
    );
    assert_eq!(
        frame::decode_server(&[0, 0, 0, 0], Expect::Frames, 100),
        Err(FrameError::EmptyFrame)
    );
}

#[test]
fn client_commands_decode() {
    let mut v = Vec::new();
    frame::encode_command(&mut v, Command::Clear);
    frame::encode_send_descs(&mut v, b"<a/>").unwrap();
    frame::encode_u32(&mut v, 0xDEAD_BEEF);
    frame::encode_send_binaries(&mut v, 1);
    frame::encode_binary(&mut v, "pi", b"img").unwrap();
    let (m, n) = frame::decode_client(&v, 100, 4).unwrap().unwrap();
    assert_eq!(m, ClientMsg::Plain(Command::Clear));
    let v = &v[n..];
    let (m, n) = frame::decode_client(v, 100, 4).unwrap().unwrap();
    assert_eq!(m, ClientMsg::SendDescs(b"<a/>"));
    let v = &v[n..];
    let (m, n) = frame::decode_client(v, 100, 4).unwrap().unwrap();
    assert_eq!(m, ClientMsg::Unknown(0xDEAD_BEEF));
    let v = &v[n..];
    let (m, n) = frame::decode_client(v, 100, 4).unwrap().unwrap();
    assert_eq!(m, ClientMsg::SendBinaries(1));
    let v = &v[n..];
    let (b, n) = frame::decode_binary(v, 10).unwrap().unwrap();
    assert_eq!((b.name, b.image, n), (&b"pi"[..], &b"img"[..], v.len()));
    assert!(frame::decode_binary(v, 2).is_err());
    for cut in 0..v.len() {
        assert_eq!(frame::decode_binary(&v[..cut], 10), Ok(None));
    }
}

fn profile(events: &[(&str, u32, u64)]) -> Vec<u8> {
    let mut doc = String::from("<profile>\n\t<events>\n");
    for (k, id, t) in events {
        doc.push_str(&format!(
            "\t\t<event type=\"{k}\" task-id=\"{id}\" time-stamp=\"{t}\"/>\n"
        ));
    }
    doc.push_str("\t</events>\n</profile>");
    frame::encode_frame_vec(doc.as_bytes())
}

async fn expect_bytes(s: &mut TcpStream, want: &[u8], what: &str) {
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("timeout reading {what}"))
        .unwrap_or_else(|e| panic!("reading {what}: {e}"));
    assert_eq!(got, want, "bytes of {what}");
}

fn word(c: Command) -> Vec<u8> {
    c.word().to_le_bytes().to_vec()
}

/// Run `set` once on a fresh session state (nothing sent yet), without admission data.
async fn run_once(
    sess: &mut Session,
    set: &TaskSet,
    binaries: &Binaries,
) -> Result<taskdist::protocol::TasksetRun, taskdist::protocol::TargetError> {
    sess.run_taskset(
        set,
        None,
        binaries,
        &mut HashSet::new(),
        &mut |_| {},
        &CancellationToken::new(),
    )
    .await
}

/// A scripted v3 server: pushes a frame before the AVAILABLE echo and another before GO_SEND,
/// and checks every byte the client writes.
#[tokio::test]
async fn pushes_before_echo_and_go_send_are_events() {
    let mut t = Task::new(0, "hey");
    t.period_ms = 10;
    let set = TaskSet::new(vec![t]).unwrap();
    let xml = set.to_xml();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut clear = word(Command::Clear);
        clear.extend(word(Command::Available));
        expect_bytes(&mut s, &clear, "CLEAR + AVAILABLE").await;
        // leftovers of an earlier run, pushed before the echo
        let mut out = profile(&[("EXIT_EXTERNAL", 0, 90)]);
        out.extend(word(Command::Available));
        s.write_all(&out).await.unwrap();
        let mut load = Vec::new();
        frame::encode_send_descs(&mut load, xml.as_bytes()).unwrap();
        frame::encode_send_binaries(&mut load, 1);
        expect_bytes(&mut s, &load, "SEND_DESCS + SEND_BINARIES").await;
        // a push where GO_SEND is expected, with an unknown event type
        let mut out = profile(&[("WEIRD", 0, 95)]);
        out.extend(word(Command::GoSend));
        s.write_all(&out).await.unwrap();
        let mut bin = Vec::new();
        frame::encode_binary(&mut bin, "hey", &Binaries::synthetic().get("hey").unwrap()).unwrap();
        bin.extend(word(Command::Start));
        expect_bytes(&mut s, &bin, "binary + START").await;
        // the run, with bytes after </profile> that must be ignored
        let doc = b"<profile><events><event type=\"START\" task-id=\"0\" time-stamp=\"100\"/>\
<event type=\"EXIT\" task-id=\"0\" time-stamp=\"101\"/><event type=\"JOBS_DONE\" task-id=\"0\" time-stamp=\"101\"/>\
</events></profile>\n\0junk<<"
            .to_vec();
        let mut f = Vec::new();
        frame::encode_u32(&mut f, doc.len() as u32);
        f.extend_from_slice(&doc);
        s.write_all(&f).await.unwrap();
        // one CLEAR per task-set: the end writes CLEAR, the next task-set only fences it
        expect_bytes(
            &mut s,
            &word(Command::Clear),
            "CLEAR after the last JOBS_DONE",
        )
        .await;
    });
    let mut sess = Session::connect(addr, SessionConfig::for_dialect(Dialect::V3))
        .await
        .unwrap();
    let mut sent = HashSet::new();
    let run = sess
        .run_taskset(
            &set,
            None,
            &Binaries::synthetic(),
            &mut sent,
            &mut |_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    server.await.unwrap();
    // Both pushes came before START: leftovers, never charged to the task-set.
    let stale: Vec<_> = run.drained.iter().map(|e| e.event.kind.clone()).collect();
    assert_eq!(
        stale,
        [EventKind::ExitExternal, EventKind::Other("WEIRD".into())]
    );
    let kinds: Vec<_> = run.events.iter().map(|e| e.event.kind.clone()).collect();
    assert_eq!(
        kinds,
        [EventKind::Start, EventKind::Exit, EventKind::JobsDone]
    );
    assert_eq!(sess.stale_events(), 2);
    assert!(sent.contains("hey"));
}

/// v1: OPTIMIZE precedes SEND_DESCS, CLEAR is followed by GET_PROFILE (v1 never pushes), and
/// START by GET_PROFILE; a job-count mismatch is a target fault.
#[tokio::test]
async fn v1_byte_sequence_and_job_count_check() {
    let mut t = Task::new(0, "hey");
    t.numberofjobs = 2;
    let set = TaskSet::new(vec![t]).unwrap();
    let ac = AdmissionControl {
        goal: Goal::None,
        query_interval_ms: 5,
    };
    let xml = set.to_xml();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut clear = word(Command::Clear);
        clear.extend(word(Command::GetProfile));
        clear.extend(word(Command::GetLive));
        expect_bytes(&mut s, &clear, "CLEAR + GET_PROFILE + GET_LIVE").await;
        // the live document is the fence: no drain window is waited
        let live = b"<live><task-descriptions><task id=\"0\" session=\"init -> dom0\" thread=\"dom0\"/></task-descriptions></live>";
        s.write_all(&frame::encode_frame_vec(live)).await.unwrap();
        let mut load = Vec::new();
        frame::encode_optimize(&mut load, ac.to_xml().as_bytes()).unwrap();
        frame::encode_send_descs(&mut load, xml.as_bytes()).unwrap();
        frame::encode_send_binaries(&mut load, 0);
        load.extend(word(Command::Start));
        load.extend(word(Command::GetProfile));
        expect_bytes(
            &mut s,
            &load,
            "OPTIMIZE + SEND_DESCS + SEND_BINARIES 0 + START",
        )
        .await;
        // only one job reported before JOBS_DONE
        s.write_all(&profile(&[
            ("START", 0, 1),
            ("EXIT", 0, 2),
            ("JOBS_DONE", 0, 2),
        ]))
        .await
        .unwrap();
        let mut end = word(Command::Stop);
        end.extend(word(Command::Clear));
        expect_bytes(&mut s, &end, "STOP + CLEAR after the fault").await;
    });
    let cfg = SessionConfig {
        drain_window: Duration::from_millis(20),
        ..SessionConfig::for_dialect(Dialect::V1)
    };
    let mut sess = Session::connect(addr, cfg).await.unwrap();
    let mut sent: HashSet<String> = ["hey".to_string()].into();
    let e = sess
        .run_taskset(
            &set,
            Some(&ac),
            &Binaries::synthetic(),
            &mut sent,
            &mut |_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(e.is_target_fault(), "{e}");
    assert!(
        e.to_string().contains("ended 1 jobs, numberofjobs is 2"),
        "{e}"
    );
    server.await.unwrap();
}

/// Push profile frames of `kind` events for task 0 until the client goes away (at most
/// `frames` frames, so the loop ends by itself).
async fn flood(s: &mut TcpStream, kind: &str, frames: usize) {
    let batch: Vec<(&str, u32, u64)> = (0..100).map(|i| (kind, 0, i)).collect();
    let frame = profile(&batch);
    for _ in 0..frames {
        if s.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// A target that floods leftovers while the client waits for the fence: the session fails
/// with a protocol error once the pile passes its cap, instead of buffering without end.
#[tokio::test]
async fn a_flood_while_fencing_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        flood(&mut s, "EXIT_EXTERNAL", 20_000).await;
    });
    let mut sess = Session::connect(addr, SessionConfig::default())
        .await
        .unwrap();
    let set = TaskSet::new(vec![Task::new(0, "hey")]).unwrap();
    let e = run_once(&mut sess, &set, &Binaries::synthetic())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("events arrived while"), "{e}");
    drop(sess);
    server.await.unwrap();
}

/// A target that stops reading but keeps pushing while a large binary is written: the write
/// fails after `reply_timeout` without progress; the pushes it reads do not keep it alive.
#[tokio::test]
async fn a_target_that_stops_reading_cannot_stall_a_write() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // answer the fence and the first GO_SEND, then only push
        let mut head = vec![0u8; 8];
        s.read_exact(&mut head).await.unwrap();
        s.write_all(&word(Command::Available)).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        s.write_all(&word(Command::GoSend)).await.unwrap();
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if s.write_all(&profile(&[("STARTX", 0, 1)])).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let cfg = SessionConfig {
        reply_timeout: Duration::from_millis(500),
        ..SessionConfig::default()
    };
    let mut sess = Session::connect(addr, cfg).await.unwrap();
    let mut binaries = Binaries::new();
    binaries.insert("big", vec![0x7f; 64 << 20]);
    let set = TaskSet::new(vec![Task::new(0, "big")]).unwrap();
    let t0 = std::time::Instant::now();
    let e = run_once(&mut sess, &set, &binaries).await.unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(25),
        "the write was kept alive by reads"
    );
    drop(sess);
    server.await.unwrap();
}

/// A 144-byte push whose length word (0x90, the GO_SEND word) arrives on its own where
/// GO_SEND is awaited: the session waits a moment for a body before deciding, so the push is
/// read as a (stale) frame and the real GO_SEND that follows is the one answered.
#[tokio::test]
async fn a_lone_0x90_length_word_is_not_taken_for_go_send() {
    let set = TaskSet::new(vec![Task::new(0, "hey")]).unwrap();
    let xml = set.to_xml();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut clear = word(Command::Clear);
        clear.extend(word(Command::Available));
        expect_bytes(&mut s, &clear, "CLEAR + AVAILABLE").await;
        s.write_all(&word(Command::Available)).await.unwrap();
        let mut load = Vec::new();
        frame::encode_send_descs(&mut load, xml.as_bytes()).unwrap();
        frame::encode_send_binaries(&mut load, 1);
        expect_bytes(&mut s, &load, "SEND_DESCS + SEND_BINARIES").await;
        // a push of exactly 144 bytes, its length word sent alone
        let mut doc = String::from("<profile><events><event type=\"EXIT_EXTERNAL\" task-id=\"0\" time-stamp=\"7\"/></events></profile>");
        while doc.len() < 142 {
            doc.push(' ');
        }
        let push = frame::encode_frame_vec(doc.as_bytes());
        assert_eq!(&push[..4], &[0x90, 0, 0, 0]);
        // two sends, as a server may write a frame; with Nagle on (as here), the body can
        // wait for the client's delayed ACK of the length word
        s.write_all(&push[..4]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.write_all(&push[4..]).await.unwrap();
        s.write_all(&word(Command::GoSend)).await.unwrap();
        let mut bin = Vec::new();
        frame::encode_binary(&mut bin, "hey", &Binaries::synthetic().get("hey").unwrap()).unwrap();
        bin.extend(word(Command::Start));
        expect_bytes(&mut s, &bin, "binary + START").await;
        s.write_all(&profile(&[
            ("START", 0, 10),
            ("EXIT", 0, 11),
            ("JOBS_DONE", 0, 11),
        ]))
        .await
        .unwrap();
        expect_bytes(&mut s, &word(Command::Clear), "CLEAR").await;
    });
    let mut sess = Session::connect(addr, SessionConfig::default())
        .await
        .unwrap();
    let run = run_once(&mut sess, &set, &Binaries::synthetic())
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(run.drained.len(), 1, "{:?}", run.drained);
    assert_eq!(run.events.len(), 3);
}
