//! Binary images from a directory and synthetic ones.

use taskdist::protocol::binaries::{synthetic_image, SYNTHETIC_IMAGE_BYTES};
use taskdist::protocol::Binaries;

#[test]
fn from_dir_loads_valid_names_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hey"), b"\x7fELF hey").unwrap();
    std::fs::write(dir.path().join("name_far_too_long_for_it"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("pi")).unwrap();
    let b = Binaries::from_dir(dir.path()).unwrap();
    assert_eq!(b.names(), vec!["hey"]);
    assert_eq!(b.get("hey").unwrap().as_ref(), b"\x7fELF hey");
    assert!(b.get("pi").is_none());
    assert!(!b.is_synthetic());
    let missing = Binaries::from_dir(dir.path().join("nope")).unwrap_err();
    assert!(missing.to_string().contains("nope"));
}

#[test]
fn synthetic_images_differ_per_name() {
    let b = Binaries::synthetic();
    let hey = b.get("hey").unwrap();
    assert_eq!(hey.len(), SYNTHETIC_IMAGE_BYTES);
    assert!(hey.starts_with(b"\x7fELFhey"));
    assert_eq!(hey, synthetic_image("hey"));
    assert_ne!(hey, b.get("pi").unwrap());
    assert!(b.get("sixteen_bytes_xx").is_none());
    let mut b = Binaries::synthetic();
    b.insert("hey", &b"real"[..]);
    assert_eq!(b.get("hey").unwrap().as_ref(), b"real");
}
