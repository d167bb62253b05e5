//! Spec files: only regular files are read, and only up to the size cap.

use std::path::PathBuf;

use taskdist_tasksets::{Spec, SpecError, MAX_SPEC_BYTES};

/// A fresh directory under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "taskdist-spec-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path().join("spec.toml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    // Without the check this blocks for ever (no writer); run it on a thread and bound it.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Spec::load(p.to_str().unwrap()).map(|_| ()));
    });
    let result = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("loading a FIFO must not block");
    let err = result.expect_err("a FIFO is not a spec");
    assert!(matches!(err, SpecError::NotAFile { .. }), "{err}");
    assert!(err.to_string().contains("a FIFO"), "{err}");
}

#[test]
fn a_device_and_a_directory_are_refused() {
    let err = Spec::load("/dev/zero").expect_err("a device is not a spec");
    assert!(
        err.to_string().contains("/dev/zero") && err.to_string().contains("character device"),
        "{err}"
    );
    let dir = TempDir::new("t");
    let err = Spec::from_file(dir.path()).expect_err("a directory is not a spec");
    assert!(matches!(err, SpecError::NotAFile { .. }), "{err}");
}

#[test]
fn a_file_over_the_cap_is_refused_naming_path_size_and_cap() {
    let dir = TempDir::new("t");
    let path = dir.path().join("big.toml");
    let mut text = String::from("# padding\n");
    while (text.len() as u64) <= MAX_SPEC_BYTES {
        text.push_str("# ............................................................\n");
    }
    std::fs::write(&path, &text).unwrap();
    let err = Spec::load(path.to_str().unwrap()).expect_err("too large");
    let msg = err.to_string();
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    assert!(msg.contains(&text.len().to_string()), "{msg}");
    assert!(msg.contains(&MAX_SPEC_BYTES.to_string()), "{msg}");
}
