//! `taskdist discover` end to end (loopback only).

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};

fn taskdist(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(args)
        .output()
        .expect("run taskdist")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_documents_every_flag() {
    let out = taskdist(&["discover", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--probe",
        "--port",
        "--timeout-ms",
        "--retries",
        "--window",
        "--rate",
        "--max-hosts",
        "--recv-buffer",
        "--socket",
        "--sort",
        "--watch",
        "--quiet",
    ] {
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                let t = l.trim_start();
                t.starts_with(&format!("{flag} ")) || t == flag || t.contains(&format!(", {flag}"))
            })
            .unwrap_or_else(|| panic!("{flag} missing from help:\n{help}"));
        // Long help: the flag on one line, its description indented on the next.
        let described = lines.get(at + 1).is_some_and(|l| {
            l.starts_with("          ") && l.trim().chars().any(char::is_alphabetic)
        });
        assert!(described, "{flag} has no help text:\n{help}");
    }
}

#[test]
fn tcp_discover_prints_the_listening_hosts() {
    let a = TcpListener::bind("127.0.6.2:0").expect("bind");
    let port = a.local_addr().expect("addr").port();
    let b = TcpListener::bind(("127.0.6.4", port)).expect("bind");
    let port_s = port.to_string();
    let out = taskdist(&[
        "discover",
        "127.0.6.0/29",
        "--probe",
        "tcp",
        "--port",
        &port_s,
        "--sort",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [format!("127.0.6.2:{port}"), format!("127.0.6.4:{port}")]
    );
    assert!(stderr.contains("probed 6, up 2"), "{stderr}");
    drop((a, b));
}

#[test]
fn no_host_up_exits_with_1() {
    let free = TcpListener::bind("127.0.6.9:0").expect("bind");
    let port = free.local_addr().expect("addr").port().to_string();
    drop(free);
    let out = taskdist(&["discover", "127.0.6.9", "--probe", "tcp", "--port", &port]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn absurd_ranges_and_bad_items_are_refused_before_probing() {
    let out = taskdist(&["discover", "fd00::/64"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--max-hosts"),
        "{}",
        text(&out.stderr)
    );
    let out = taskdist(&["discover", "10.0.0.300"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected"),
        "{}",
        text(&out.stderr)
    );
}

/// Whether the run could open an ICMP socket; a run that could not fails the test under
/// TASKDIST_REQUIRE_PRIVILEGED=1 and is skipped otherwise.
fn icmp_allowed(test: &str, out: &std::process::Output) -> bool {
    let stderr = text(&out.stderr);
    let no_socket = out.status.code() == Some(2) && stderr.contains("ICMP");
    common::privileged::need(
        test,
        "an ICMP socket",
        if no_socket {
            Err(stderr.trim().to_owned())
        } else {
            Ok(())
        },
    )
    .is_some()
}

#[test]
fn icmp_discover_of_loopback_addresses() {
    let out = taskdist(&["discover", "127.0.7.0/28", "--sort"]);
    let stderr = text(&out.stderr);
    if !icmp_allowed("icmp_discover_of_loopback_addresses", &out) {
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let expected: Vec<String> = (1..=14).map(|h| format!("127.0.7.{h}")).collect();
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), expected);
    assert!(stderr.contains("probed 14, up 14"), "{stderr}");
}

/// Issue 15's wrong result: unpaced with a 10 ms timeout, the per-probe path found 0 of
/// 65,534 loopback addresses because replies waited in the socket while the burst was sent.
#[test]
fn unpaced_discover_with_a_10ms_timeout_finds_a_whole_loopback_slash16() {
    let out = taskdist(&[
        "discover",
        "127.5.0.0/16",
        "--rate",
        "0",
        "--timeout-ms",
        "10",
        "--retries",
        "0",
        "--sort",
    ]);
    let stderr = text(&out.stderr);
    if !icmp_allowed(
        "unpaced_discover_with_a_10ms_timeout_finds_a_whole_loopback_slash16",
        &out,
    ) {
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 65534, "{stderr}");
    assert_eq!(stdout.lines().next(), Some("127.5.0.1"));
    assert_eq!(stdout.lines().last(), Some("127.5.255.254"));
    assert!(stderr.contains("probed 65534, up 65534"), "{stderr}");
}

#[test]
fn watch_mode_prints_hosts_as_they_come_up() {
    let a = TcpListener::bind("127.0.6.12:0").expect("bind");
    let port = a.local_addr().expect("addr").port().to_string();
    let out = taskdist(&[
        "discover",
        "127.0.6.12/31",
        "--probe",
        "tcp",
        "--port",
        &port,
        "--watch",
        "--watch-secs",
        "2",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [format!("up 127.0.6.12:{port}")]
    );
    drop(a);
}
