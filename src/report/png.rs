//! PNG output of the charts: the SVG rendered by resvg at twice its size, with the system's
//! fonts (sans-serif: Liberation Sans, else DejaVu Sans, else what the system calls so).

use resvg::{tiny_skia, usvg};

use super::ReportError;

/// Renders chart SVGs to PNG; loads the system fonts once.
pub struct PngRenderer {
    options: usvg::Options<'static>,
}

impl std::fmt::Debug for PngRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PngRenderer")
            .field("fonts", &self.options.fontdb.len())
            .finish()
    }
}

impl Default for PngRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl PngRenderer {
    /// Pixels per SVG unit.
    pub const SCALE: f32 = 2.0;

    /// A renderer with the system fonts.
    pub fn new() -> Self {
        let mut options = usvg::Options::default();
        let db = options.fontdb_mut();
        db.load_system_fonts();
        let family = ["Liberation Sans", "DejaVu Sans", "Arial"]
            .into_iter()
            .find(|name| {
                db.faces()
                    .any(|f| f.families.iter().any(|(n, _)| n == name))
            });
        if let Some(name) = family {
            db.set_sans_serif_family(name);
        }
        PngRenderer { options }
    }

    /// Number of font faces found on the system (0: charts render without text).
    pub fn fonts(&self) -> usize {
        self.options.fontdb.len()
    }

    /// The PNG image of one chart (`name` is used in errors).
    pub fn render(&self, name: &str, svg: &str) -> Result<Vec<u8>, ReportError> {
        let err = |reason: String| ReportError::Render {
            chart: name.to_owned(),
            reason,
        };
        let tree = usvg::Tree::from_str(svg, &self.options).map_err(|e| err(e.to_string()))?;
        let size = tree.size();
        let w = (size.width() * Self::SCALE).ceil() as u32;
        let h = (size.height() * Self::SCALE).ceil() as u32;
        let mut pixmap =
            tiny_skia::Pixmap::new(w, h).ok_or_else(|| err(format!("bad size {w}x{h}")))?;
        resvg::render(
            &tree,
            tiny_skia::Transform::from_scale(Self::SCALE, Self::SCALE),
            &mut pixmap.as_mut(),
        );
        pixmap.encode_png().map_err(|e| err(e.to_string()))
    }
}
