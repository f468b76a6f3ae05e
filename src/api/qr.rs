//! Renders a pairing QR string as PNG or SVG, with the qrcode crate's own renderers.

use image::{ImageFormat, Luma};
use qrcode::QrCode;

/// Smallest side of the rendered code, in pixels (quiet zone included).
const MIN_SIDE: u32 = 256;

pub fn svg(data: &str) -> Result<String, String> {
    let code = QrCode::new(data.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(MIN_SIDE, MIN_SIDE)
        .build())
}

pub fn png(data: &str) -> Result<Vec<u8>, String> {
    let code = QrCode::new(data.as_bytes()).map_err(|e| e.to_string())?;
    let image = code
        .render::<Luma<u8>>()
        .min_dimensions(MIN_SIDE, MIN_SIDE)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}
