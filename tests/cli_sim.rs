//! `taskdist sim` from the command line: input errors are refused before anything is served.

use std::process::Command;

#[test]
fn a_fault_for_a_host_the_cluster_lacks_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(["sim", "-n", "2", "--port", "0", "--first", "127.0.0.70"])
        .args(["--fault", "5=freeze", "--duration-s", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("host 5"), "{stderr}");
    assert!(stderr.contains("0 to 1"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing may be served");
}

#[test]
fn groups_start_on_consecutive_addresses_and_print_dialect_and_labels() {
    let out = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(["sim", "--port", "0", "--first", "127.0.0.94"])
        .args(["--group", "2:v1:board=a,cores=2", "--group", "1:board=b"])
        .args([
            "--group",
            "1:v2",
            "--fault",
            "2=refuse",
            "--duration-s",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let ips: Vec<&str> = lines
        .iter()
        .map(|l| l[0].rsplit_once(':').unwrap().0)
        .collect();
    assert_eq!(
        ips,
        ["127.0.0.94", "127.0.0.95", "127.0.0.96", "127.0.0.97"]
    );
    let rest: Vec<String> = lines.iter().map(|l| l[1..].join(" ")).collect();
    assert_eq!(
        rest,
        [
            "v1 board=a,cores=2",
            "v1 board=a,cores=2",
            "v3 board=b refusing",
            "v2"
        ]
    );
    // With --port 0 every host still prints the port it really listens on.
    let ports: Vec<&str> = lines
        .iter()
        .map(|l| l[0].rsplit_once(':').unwrap().1)
        .collect();
    assert!(ports.iter().all(|p| *p != "0"), "{stdout}");
    assert!(stderr.contains("4 simulated hosts in 3 groups"), "{stderr}");
}

#[test]
fn a_group_fault_past_the_last_host_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_taskdist"))
        .args(["sim", "--port", "0", "--first", "127.0.0.98"])
        .args(["--group", "1:v1", "--group", "2:v3", "--fault", "3=freeze"])
        .args(["--duration-s", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("fault freeze names host 3, but the groups have hosts 0 to 2"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing may be served");
}
