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
