//! Decoding user-supplied images (img2img init images) with bounds: the format is
//! sniffed from the bytes, and the decoder refuses images larger than
//! [`MAX_IMAGE_SIDE`] on a side or needing more than [`MAX_DECODE_BYTES`] before it
//! allocates, so a corrupt or hostile header cannot exhaust memory.

use image::{ImageReader, Limits, RgbaImage};

/// Longest side accepted (pixels): larger than any size the pipeline can denoise.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// Most memory one decode may allocate (bytes).
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Decodes PNG or JPEG bytes to RGBA8. `origin` (a path or a label) starts every error.
pub fn decode_image(bytes: &[u8], origin: &str) -> Result<RgbaImage, String> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("{origin}: {e}"))?;
    if reader.format().is_none() {
        return Err(format!("{origin}: not a PNG or JPEG image"));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| format!("{origin}: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(format!(
            "{origin}: the image is empty ({}x{})",
            img.width(),
            img.height()
        ));
    }
    Ok(img.to_rgba8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbaImage::from_pixel(w, h, image::Rgba([10, 20, 30, 255]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_a_png() {
        let img = decode_image(&png(5, 3), "a.png").unwrap();
        assert_eq!((img.width(), img.height()), (5, 3));
        assert_eq!(img.get_pixel(4, 2).0, [10, 20, 30, 255]);
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        let e = decode_image(b"hello, not an image", "x.png").unwrap_err();
        assert!(e.starts_with("x.png: not a PNG or JPEG"), "{e}");
    }

    #[test]
    fn refuses_a_header_claiming_a_huge_image_before_allocating() {
        // A valid PNG whose IHDR claims 100000 x 100000 pixels (40 GB of RGBA).
        let mut bytes = png(2, 2);
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        // Fix the IHDR chunk's CRC so the decoder reaches the size check.
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let e = decode_image(&bytes, "big.png").unwrap_err();
        assert!(e.starts_with("big.png: "), "{e}");
        assert!(e.to_lowercase().contains("limit"), "{e}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
}
