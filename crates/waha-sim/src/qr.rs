//! QR images (a real, scannable QR code) and pairing codes.

use std::io::Cursor;

use image::{ImageFormat, Luma};
use qrcode::QrCode;

/// Renders `value` as a PNG QR code.
pub(crate) fn png(value: &str) -> Result<Vec<u8>, String> {
    let code = QrCode::new(value.as_bytes()).map_err(|e| e.to_string())?;
    let image = code.render::<Luma<u8>>().min_dimensions(264, 264).build();
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(bytes.into_inner())
}

/// A pairing code like WhatsApp's: `ABCD-EFGH`.
pub(crate) fn pairing_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTVWXYZ123456789";
    let mut code: String = (0..8)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    code.insert(4, '-');
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_the_signature_and_codes_have_the_shape() {
        let bytes = png("2@abc,def=,ghi=,jkl=").unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let code = pairing_code();
        assert_eq!(code.len(), 9);
        assert_eq!(code.as_bytes()[4], b'-');
    }
}
