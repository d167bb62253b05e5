//! The simulated target checked byte by byte with a raw TCP client.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use taskdist::protocol::frame::{self, Command};
use taskdist::protocol::Dialect;
use taskdist::sim::{SimCluster, SimConfig};
use taskdist::{Task, TaskSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn word(c: Command) -> [u8; 4] {
    c.word().to_le_bytes()
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut v))
        .await
        .expect("answer within 5 s")
        .expect("read");
    v
}

async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let size = read_n(s, 4).await;
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    read_n(s, size).await
}

/// Nothing arrives within 100 ms.
async fn silent(s: &mut TcpStream) {
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await;
    assert!(r.is_err(), "expected silence, got {r:?}");
}

async fn sim(dialect: Dialect, first: u8) -> (SimCluster, SocketAddr) {
    let c = SimCluster::start(
        1,
        Ipv4Addr::new(127, 0, 0, first),
        0,
        SimConfig {
            dialect,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let a = c.addrs()[0];
    (c, a)
}

fn one_hey() -> Vec<u8> {
    let set = TaskSet::new(vec![Task::new(0, "hey")]).unwrap();
    let mut v = Vec::new();
    v.extend(word(Command::Clear));
    frame::encode_send_descs(&mut v, set.to_xml().as_bytes()).unwrap();
    frame::encode_send_binaries(&mut v, 1);
    v
}

const HEY_DOC: &[u8] = b"<profile>\n\t<events>\n\
\t\t<event type=\"START\" task-id=\"0\" time-stamp=\"1000\"/>\n\
\t\t<event type=\"EXIT\" task-id=\"0\" time-stamp=\"1001\"/>\n\
\t\t<event type=\"JOBS_DONE\" task-id=\"0\" time-stamp=\"1001\"/>\n\
\t</events>\n</profile>\n\0";

#[tokio::test]
async fn v3_replies_and_pushes_exact_bytes() {
    let (c, addr) = sim(Dialect::V3, 70).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&word(Command::Available)).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, word(Command::Available));
    s.write_all(&one_hey()).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, word(Command::GoSend));
    let mut bin = Vec::new();
    frame::encode_binary(&mut bin, "hey", b"image").unwrap();
    bin.extend(word(Command::Start));
    s.write_all(&bin).await.unwrap();
    assert_eq!(read_frame(&mut s).await, HEY_DOC);
    // GET_PROFILE with nothing pending: no answer at all
    s.write_all(&word(Command::GetProfile)).await.unwrap();
    silent(&mut s).await;
    // the same name again is accepted (GO_SEND) but ignored
    let mut again = Vec::new();
    frame::encode_send_binaries(&mut again, 1);
    s.write_all(&again).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, word(Command::GoSend));
    let mut bin = Vec::new();
    frame::encode_binary(&mut bin, "hey", b"other").unwrap();
    s.write_all(&bin).await.unwrap();
    s.write_all(&word(Command::Available)).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, word(Command::Available));
    assert_eq!(c.stats(0).unwrap().binaries_received, 2);
    c.shutdown().await;
}

#[tokio::test]
async fn v2_skips_available_as_unknown_word() {
    let (c, addr) = sim(Dialect::V2, 71).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&word(Command::Available)).await.unwrap();
    silent(&mut s).await;
    // the stream is still in step: a full cycle works and is pushed
    s.write_all(&one_hey()).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, word(Command::GoSend));
    let mut bin = Vec::new();
    frame::encode_binary(&mut bin, "hey", b"image").unwrap();
    bin.extend(word(Command::Start));
    s.write_all(&bin).await.unwrap();
    assert_eq!(read_frame(&mut s).await, HEY_DOC);
    c.shutdown().await;
}

#[tokio::test]
async fn v1_never_pushes_and_answers_get_profile() {
    let (c, addr) = sim(Dialect::V1, 72).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&one_hey()).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, word(Command::GoSend));
    let mut bin = Vec::new();
    frame::encode_binary(&mut bin, "hey", b"image").unwrap();
    bin.extend(word(Command::Start));
    s.write_all(&bin).await.unwrap();
    silent(&mut s).await;
    s.write_all(&word(Command::GetProfile)).await.unwrap();
    assert_eq!(read_frame(&mut s).await, HEY_DOC);
    s.write_all(&word(Command::GetProfile)).await.unwrap();
    silent(&mut s).await;
    c.shutdown().await;
}

#[tokio::test]
async fn v3_optimize_corrupts_like_a_real_server() {
    // OPTIMIZE is unknown to v3: the word is skipped and its length and payload are read as
    // commands. A payload holding the AVAILABLE word therefore gets echoed.
    let (c, addr) = sim(Dialect::V3, 73).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut v = Vec::new();
    frame::encode_optimize(&mut v, &word(Command::Available)).unwrap();
    s.write_all(&v).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, word(Command::Available));
    c.shutdown().await;
}
