//! Content codings (RFC 9110 §8.4, §12.5.3): choosing gzip or deflate and encoding a body.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};

/// The coding of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// No coding.
    Identity,
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950), as RFC 9110 §8.4.1.2 defines it.
    Deflate,
}

impl Coding {
    /// The Content-Encoding token, `None` for identity.
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Deflate => Some("deflate"),
        }
    }
}

/// Picks the coding from Accept-Encoding: the highest q-value among gzip and deflate (gzip on a
/// tie), `*` standing for codings not listed, `q=0` refusing; identity when nothing acceptable
/// is preferred or when identity itself is preferred.
pub fn negotiate(accept_encoding: Option<&[u8]>) -> Coding {
    let Some(raw) = accept_encoding.and_then(|r| std::str::from_utf8(r).ok()) else {
        return Coding::Identity;
    };
    let mut gzip = None;
    let mut deflate = None;
    let mut identity = None;
    let mut star = None;
    for item in raw.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = Some(1000);
        for param in parts {
            if let Some((key, value)) = param.split_once('=')
                && key.trim().eq_ignore_ascii_case("q")
            {
                q = parse_qvalue(value.trim());
            }
        }
        let Some(q) = q else { continue };
        let slot = match name.as_str() {
            "gzip" | "x-gzip" => &mut gzip,
            "deflate" => &mut deflate,
            "identity" => &mut identity,
            "*" => &mut star,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
    }
    let gzip = gzip.or(star).unwrap_or(0);
    let deflate = deflate.or(star).unwrap_or(0);
    let identity = identity.or(star).unwrap_or(1);
    let (best, q) = if deflate > gzip {
        (Coding::Deflate, deflate)
    } else {
        (Coding::Gzip, gzip)
    };
    if q == 0 || q < identity {
        Coding::Identity
    } else {
        best
    }
}

/// RFC 9110 §12.4.2 qvalue, in thousandths; `None` when invalid.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Level used for both codings: gzip's own default, so sizes match what operators know.
const LEVEL: u32 = 6;

/// A writer that encodes what it is given with one coding.
pub enum BodyEncoder<W: Write> {
    /// Passes bytes through.
    Identity(W),
    /// gzip.
    Gzip(GzEncoder<W>),
    /// zlib.
    Deflate(ZlibEncoder<W>),
}

impl<W: Write> BodyEncoder<W> {
    /// Wraps `inner` with `coding`.
    pub fn new(coding: Coding, inner: W) -> Self {
        let level = Compression::new(LEVEL);
        match coding {
            Coding::Identity => BodyEncoder::Identity(inner),
            Coding::Gzip => BodyEncoder::Gzip(GzEncoder::new(inner, level)),
            Coding::Deflate => BodyEncoder::Deflate(ZlibEncoder::new(inner, level)),
        }
    }

    /// Writes the coding's trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            BodyEncoder::Identity(w) => Ok(w),
            BodyEncoder::Gzip(e) => e.finish(),
            BodyEncoder::Deflate(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for BodyEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BodyEncoder::Identity(w) => w.write(buf),
            BodyEncoder::Gzip(e) => e.write(buf),
            BodyEncoder::Deflate(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            BodyEncoder::Identity(w) => w.flush(),
            BodyEncoder::Gzip(e) => e.flush(),
            BodyEncoder::Deflate(e) => e.flush(),
        }
    }
}

/// Encodes a whole buffered body.
pub fn encode_all(coding: Coding, body: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = BodyEncoder::new(coding, Vec::with_capacity(body.len() / 3 + 64));
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pick(raw: &str) -> Coding {
        negotiate(Some(raw.as_bytes()))
    }

    #[test]
    fn q_values_are_honoured() {
        assert_eq!(negotiate(None), Coding::Identity);
        assert_eq!(pick("gzip"), Coding::Gzip);
        assert_eq!(pick("deflate"), Coding::Deflate);
        assert_eq!(pick("gzip, deflate, br"), Coding::Gzip);
        assert_eq!(pick("gzip;q=0.5, deflate;q=0.8"), Coding::Deflate);
        assert_eq!(pick("gzip;q=0, deflate;q=0"), Coding::Identity);
        assert_eq!(pick("gzip;q=0"), Coding::Identity);
        assert_eq!(pick("br"), Coding::Identity);
        assert_eq!(pick("*"), Coding::Gzip);
        assert_eq!(pick("*;q=0.3, gzip;q=0"), Coding::Deflate);
        assert_eq!(pick("gzip;q=0.2, identity;q=0.9"), Coding::Identity);
        assert_eq!(pick("GZIP;Q=1.000"), Coding::Gzip);
        assert_eq!(
            pick("gzip;q=2"),
            Coding::Identity,
            "invalid q ignores the item"
        );
        assert_eq!(pick("x-gzip"), Coding::Gzip);
        assert_eq!(negotiate(Some(b"\xff gzip")), Coding::Identity);
    }

    #[test]
    fn gzip_and_deflate_round_trip() {
        let body = b"hello hello hello hello".repeat(100);
        let gz = encode_all(Coding::Gzip, &body).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        let z = encode_all(Coding::Deflate, &body).unwrap();
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        assert_eq!(encode_all(Coding::Identity, &body).unwrap(), body);
    }
}
