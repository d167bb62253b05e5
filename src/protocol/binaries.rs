//! Binary images sent with SEND_BINARIES, by package name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::frame::check_name;

/// Size of a synthetic image made by [`Binaries::synthetic`].
pub const SYNTHETIC_IMAGE_BYTES: usize = 256;

/// Binary images by package name (`pkg` of a task).
///
/// Either loaded from a directory ([`Binaries::from_dir`]: the file `DIR/<pkg>` is the image of
/// `pkg`) or synthetic ([`Binaries::synthetic`]): then every valid name has an image, made on
/// request, for simulated targets that only check names.
#[derive(Debug, Clone, Default)]
pub struct Binaries {
    images: HashMap<String, Bytes>,
    synthetic: bool,
}

/// A binary directory could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read binaries from {path}: {source}")]
pub struct BinariesError {
    /// The path that failed.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// A synthetic image for `name`: `SYNTHETIC_IMAGE_BYTES` bytes starting with the ELF magic,
/// then the name, then a byte pattern derived from the name (so images differ per name).
pub fn synthetic_image(name: &str) -> Bytes {
    let mut v = Vec::with_capacity(SYNTHETIC_IMAGE_BYTES);
    v.extend_from_slice(b"\x7fELF");
    v.extend_from_slice(name.as_bytes());
    let mut x: u32 = name.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    while v.len() < SYNTHETIC_IMAGE_BYTES {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v.truncate(SYNTHETIC_IMAGE_BYTES);
    Bytes::from(v)
}

impl Binaries {
    /// An empty set (add images with [`Binaries::insert`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Synthetic images for every valid name (see [`synthetic_image`]).
    pub fn synthetic() -> Self {
        Binaries {
            images: HashMap::new(),
            synthetic: true,
        }
    }

    /// Load every regular file of `dir` whose name is a valid binary name (1 to 15 bytes).
    /// Other entries are skipped with a debug log.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, BinariesError> {
        let dir = dir.as_ref();
        let err = |path: &Path, source| BinariesError {
            path: path.to_path_buf(),
            source,
        };
        let mut images = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
            let entry = entry.map_err(|e| err(dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::debug!(?path, "skipping binary with a non-UTF-8 name");
                continue;
            };
            if check_name(&name).is_err() {
                tracing::debug!(?path, "skipping file: name is not 1 to 15 bytes");
                continue;
            }
            if !entry.file_type().map_err(|e| err(&path, e))?.is_file() {
                continue;
            }
            let data = std::fs::read(&path).map_err(|e| err(&path, e))?;
            images.insert(name, Bytes::from(data));
        }
        Ok(Binaries {
            images,
            synthetic: false,
        })
    }

    /// Add or replace an image.
    pub fn insert(&mut self, name: impl Into<String>, image: impl Into<Bytes>) {
        self.images.insert(name.into(), image.into());
    }

    /// The image for `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<Bytes> {
        if let Some(b) = self.images.get(name) {
            return Some(b.clone());
        }
        if self.synthetic && check_name(name).is_ok() {
            return Some(synthetic_image(name));
        }
        None
    }

    /// Whether images are made on request.
    pub fn is_synthetic(&self) -> bool {
        self.synthetic
    }

    /// Names of the loaded (non-synthetic) images, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.images.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}
