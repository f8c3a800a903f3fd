//! The envelope shared by snapshot and checkpoint files: an 8-byte magic, a format version
//! (u16 LE), the CRC-32 of the body (u32 LE), the body length (u64 LE), then the body. One
//! implementation, so both file kinds refuse damage the same way.

const HEADER: usize = 8 + 2 + 4 + 8;

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Wrong magic, or shorter than a header: not this kind of file.
    BadHeader,
    /// The length field disagrees with the bytes present: truncated or extended.
    Length,
    /// The body's checksum does not match: corrupt or tampered.
    Checksum,
}

/// Wraps `body` in an envelope.
pub(crate) fn seal(magic: &[u8; 8], format: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Opens an envelope: its format version and its verified body. The format is returned before
/// the checksum is checked, so a newer file is reported as such rather than as corrupt.
pub(crate) fn open<'a>(
    magic: &[u8; 8],
    bytes: &'a [u8],
) -> Result<(u16, Result<&'a [u8], FrameError>), FrameError> {
    if bytes.len() < HEADER || &bytes[..8] != magic {
        return Err(FrameError::BadHeader);
    }
    let format = u16::from_le_bytes([bytes[8], bytes[9]]);
    let crc = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[14..22]);
    let body = &bytes[HEADER..];
    let checked = if body.len() as u64 != u64::from_le_bytes(len) {
        Err(FrameError::Length)
    } else if crc32fast::hash(body) != crc {
        Err(FrameError::Checksum)
    } else {
        Ok(body)
    };
    Ok((format, checked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_refusal() {
        let sealed = seal(b"TESTMAGC", 3, b"hello");
        assert_eq!(open(b"TESTMAGC", &sealed), Ok((3, Ok(&b"hello"[..]))));
        assert_eq!(open(b"OTHERMAG", &sealed), Err(FrameError::BadHeader));
        assert_eq!(open(b"TESTMAGC", &sealed[..10]), Err(FrameError::BadHeader));
        assert_eq!(
            open(b"TESTMAGC", &sealed[..sealed.len() - 1]),
            Ok((3, Err(FrameError::Length)))
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(open(b"TESTMAGC", &bad), Ok((3, Err(FrameError::Checksum))));
    }
}
