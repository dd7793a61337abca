//! The TrueType font plotters draws chart text with: the first of a few usual system fonts, registered once.

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// Where the usual system fonts live (Debian and other Linux layouts, macOS).
pub const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a system font as plotters' `sans-serif` once per process; whether chart text can be drawn.
pub fn register() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for path in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps registered fonts for the life of the process and wants them 'static; the font is
                // read once per process, so leaking it is bounded.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!(tried = ?FONT_PATHS, "no TrueType font found; charts are drawn without text");
        false
    })
}
