//! Name-value pairs (§3.4): the lengths, whole-record decoding and the incremental
//! `FCGI_PARAMS` parser whose pairs may straddle records.

use bytes::{BufMut, BytesMut};

use super::record::ProtocolError;

/// A name-value pair (§3.4): raw name and value bytes.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Reads one §3.4 length: (length, bytes used); None if `b` is too short.
fn read_len(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        n if n < 0x80 => Some((usize::from(n), 1)),
        _ => b.first_chunk::<4>().map(|q| {
            let len = u32::from_be_bytes(*q) & 0x7fff_ffff;
            (usize::try_from(len).unwrap_or(usize::MAX), 4)
        }),
    }
}

/// Reads a pair's two lengths (§3.4): (prefix bytes, name length, value length, total).
fn pair_header(b: &[u8]) -> Option<(usize, usize, usize, usize)> {
    let (name_len, a) = read_len(b)?;
    let (value_len, c) = read_len(b.get(a..)?)?;
    let total = (a + c).saturating_add(name_len).saturating_add(value_len);
    Some((a + c, name_len, value_len, total))
}

/// Copies out the pair whose header was read, and the rest; None if not all here.
fn take_pair(
    b: &[u8],
    (prefix, name_len, _, total): (usize, usize, usize, usize),
) -> Option<(Pair, &[u8])> {
    let name = b.get(prefix..prefix + name_len)?;
    let value = b.get(prefix + name_len..total)?;
    Some(((name.to_vec(), value.to_vec()), b.get(total..)?))
}

pub(crate) fn pair_len(name: &[u8], value: &[u8]) -> usize {
    let prefix = |n: usize| if n < 0x80 { 1 } else { 4 };
    prefix(name.len()) + prefix(value.len()) + name.len() + value.len()
}

/// Decodes name-value pairs (§3.4) that must lie wholly within `content` (one
/// `FCGI_GET_VALUES`/`FCGI_GET_VALUES_RESULT` body, §4.1). Every declared length is
/// checked against what remains of `content` before anything is copied.
pub fn decode_pairs(mut content: &[u8]) -> Result<Vec<Pair>, ProtocolError> {
    let mut pairs = Vec::new();
    while !content.is_empty() {
        let remaining = content.len();
        let header =
            pair_header(content).ok_or(ProtocolError::PairHeaderTruncated { remaining })?;
        let exceeds = ProtocolError::PairLengthExceedsRecord {
            declared: header.3,
            remaining,
        };
        let (pair, rest) = take_pair(content, header).ok_or(exceeds)?;
        pairs.push(pair);
        content = rest;
    }
    Ok(pairs)
}

/// Encodes name-value pairs (§3.4): 1-byte lengths below 128, else 4-byte lengths
/// with the high bit set. Raw bytes, order kept.
///
/// # Panics
/// If a name or value is longer than 0x7fff_ffff bytes (not encodable, §3.4).
pub fn encode_pairs(pairs: &[(impl AsRef<[u8]>, impl AsRef<[u8]>)], out: &mut BytesMut) {
    fn put_len(out: &mut BytesMut, len: usize) {
        match u8::try_from(len) {
            Ok(b) if b < 0x80 => out.put_u8(b),
            _ => match u32::try_from(len) {
                Ok(l) if l <= 0x7fff_ffff => out.put_u32(l | 0x8000_0000),
                _ => panic!("name-value length {len} exceeds the 31-bit FastCGI limit"),
            },
        }
    }
    for (name, value) in pairs {
        let (name, value) = (name.as_ref(), value.as_ref());
        out.reserve(pair_len(name, value));
        put_len(out, name.len());
        put_len(out, value.len());
        out.put_slice(name);
        out.put_slice(value);
    }
}

/// Incremental `FCGI_PARAMS` name-value pair parser (FastCGI 1.0 §3.4, §5.2): pairs may
/// straddle record boundaries; names and values are raw bytes, order and case kept;
/// 1-byte lengths (<128) and 4-byte lengths (high bit set, 31 bits).
#[derive(Debug)]
pub struct ParamsParser {
    /// Bytes of an incomplete pair carried over between records.
    buf: Vec<u8>,
    /// Stream bytes fed so far.
    fed: usize,
    /// Stream bytes used by complete pairs so far.
    used: usize,
    limit: usize,
}

impl ParamsParser {
    /// A parser that rejects streams over `max_total_bytes` bytes (prefixes included).
    pub fn new(max_total_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            fed: 0,
            used: 0,
            limit: max_total_bytes,
        }
    }

    /// Feed one PARAMS record's content; returns complete pairs found so far (may be none).
    /// Errors with [`ProtocolError::ParamsTooLarge`] when total bytes would exceed the limit:
    /// checked using the declared lengths BEFORE buffering/allocating them, so a 2^31
    /// declared length fails at once with no allocation. Don't feed after an error.
    pub fn feed(&mut self, content: &[u8]) -> Result<Vec<Pair>, ProtocolError> {
        let mut pairs = Vec::new();
        self.feed_into(content, &mut pairs)?;
        Ok(pairs)
    }

    /// [`ParamsParser::feed`], appending the complete pairs to `pairs` (the request's own
    /// list: no list per record to allocate and copy over).
    pub fn feed_into(
        &mut self,
        content: &[u8],
        pairs: &mut Vec<Pair>,
    ) -> Result<(), ProtocolError> {
        let too_large = ProtocolError::ParamsTooLarge { limit: self.limit };
        self.fed = self
            .fed
            .checked_add(content.len())
            .filter(|&n| n <= self.limit)
            .ok_or(too_large)?;
        if self.buf.is_empty() {
            // Fast path: parse in place, keep only the incomplete tail.
            let used = self.parse(content, pairs)?;
            self.buf
                .extend_from_slice(content.get(used..).unwrap_or_default());
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(content);
            let used = self.parse(&buf, pairs)?;
            buf.drain(..used.min(buf.len()));
            self.buf = buf;
        }
        Ok(())
    }

    /// Parses whole pairs from `data`, returning the bytes they used.
    fn parse(&mut self, mut data: &[u8], pairs: &mut Vec<Pair>) -> Result<usize, ProtocolError> {
        let start = data.len();
        while let Some(header) = pair_header(data) {
            if self.used.saturating_add(header.3) > self.limit {
                return Err(ProtocolError::ParamsTooLarge { limit: self.limit });
            }
            let Some((pair, rest)) = take_pair(data, header) else {
                break;
            };
            self.used += header.3;
            pairs.push(pair);
            data = rest;
        }
        Ok(start - data.len())
    }

    /// Bytes reserved for an incomplete pair (tests check nothing is allocated ahead).
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Called on the empty PARAMS record; errors if a partial pair is left over.
    pub fn finish(self) -> Result<(), ProtocolError> {
        match self.buf.len() {
            0 => Ok(()),
            buffered => Err(ProtocolError::TruncatedParams { buffered }),
        }
    }
}
