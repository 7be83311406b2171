//! The responder's side of the FastCGI records (FastCGI 1.0 §4, §5): what a web server sends
//! us, decoded into [`Incoming`], and what we answer, encoded from [`Outgoing`], as a
//! `tokio_util` codec over [`crate::fastcgi_protocol`].

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::fastcgi_protocol::pairs::pair_len;
pub use crate::fastcgi_protocol::*;

/// One record as read from the web server (§3.3, §4, §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `FCGI_BEGIN_REQUEST` (§5.1). `role` is not validated: answer unknown roles
    /// with `UNKNOWN_ROLE` (§5.5).
    BeginRequest { id: u16, role: u16, keep_conn: bool },
    /// `FCGI_ABORT_REQUEST` (§5.4); any content is ignored.
    AbortRequest { id: u16 },
    /// One `FCGI_PARAMS` record (§5.2): raw stream bytes, feed them to [`ParamsParser`];
    /// empty content ends the stream (§3.3).
    Params { id: u16, content: Bytes },
    /// One `FCGI_STDIN` record (§5.3); empty content ends the stream.
    Stdin { id: u16, content: Bytes },
    /// One `FCGI_DATA` record (§5.3, filter role); empty content ends the stream.
    Data { id: u16, content: Bytes },
    /// `FCGI_GET_VALUES` (§4.1) with request id 0; the (empty) values are dropped.
    GetValues { names: Vec<Vec<u8>> },
    /// Any other type, including application-to-server types sent to us; answer
    /// management ones (id 0) with [`Outgoing::UnknownType`] (§4.2).
    Unknown { record_type: u8, id: u16 },
}

/// One record we send (§4, §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// `FCGI_STDOUT` (§5.3). Content over 65535 bytes is split into several records;
    /// EMPTY content is written as one empty record, which ends the stream.
    Stdout { id: u16, content: Bytes },
    /// `FCGI_STDERR` (§5.3); same rules as `Stdout`.
    Stderr { id: u16, content: Bytes },
    /// `FCGI_END_REQUEST` (§5.5).
    EndRequest {
        id: u16,
        app_status: u32,
        protocol_status: u8,
    },
    /// `FCGI_GET_VALUES_RESULT` (§4.1); must fit one record (65535 bytes of pairs).
    GetValuesResult { pairs: Vec<(Vec<u8>, Vec<u8>)> },
    /// `FCGI_UNKNOWN_TYPE` (§4.2) answering a management record of `record_type`.
    UnknownType { record_type: u8 },
}

/// `tokio_util` codec: decodes [`Incoming`] records from the web server and encodes
/// [`Outgoing`] ones (§3.3). Stateless apart from the buffer `Framed` keeps.
#[derive(Debug, Default, Clone)]
pub struct RecordCodec {
    _private: (),
}

impl RecordCodec {
    /// A new codec.
    pub fn new() -> Self {
        Self::default()
    }
}

fn to_incoming(record_type: u8, id: u16, content: Bytes) -> Result<Incoming, ProtocolError> {
    let app_id = || app_id(record_type, id);
    Ok(match record_type {
        BEGIN_REQUEST => {
            let Some(&[role_hi, role_lo, flags, ..]) = content.first_chunk::<8>() else {
                return Err(ProtocolError::BeginBodyTooShort(content.len()));
            };
            let role = u16::from_be_bytes([role_hi, role_lo]);
            let keep_conn = flags & KEEP_CONN != 0;
            Incoming::BeginRequest {
                id: app_id()?,
                role,
                keep_conn,
            }
        }
        ABORT_REQUEST => Incoming::AbortRequest { id: app_id()? },
        PARAMS => Incoming::Params {
            id: app_id()?,
            content,
        },
        STDIN => Incoming::Stdin {
            id: app_id()?,
            content,
        },
        DATA => Incoming::Data {
            id: app_id()?,
            content,
        },
        GET_VALUES if id != 0 => {
            return Err(ProtocolError::ManagementRecordWithId { record_type, id });
        }
        GET_VALUES => Incoming::GetValues {
            names: decode_pairs(&content)?
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
        },
        _ => Incoming::Unknown { record_type, id },
    })
}

impl Decoder for RecordCodec {
    type Item = Incoming;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
        match take_record(src)? {
            Some((record_type, id, content)) => to_incoming(record_type, id, content).map(Some),
            None => Ok(None),
        }
    }

    /// Clean EOF is `Ok(None)`; EOF inside a record is [`ProtocolError::UnexpectedEof`].
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
        match self.decode(src)? {
            Some(record) => Ok(Some(record)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtocolError::UnexpectedEof {
                buffered: src.len(),
                needed: src.first_chunk().map_or(HEADER_LEN, record_len),
            }),
        }
    }
}

impl Encoder<Outgoing> for RecordCodec {
    type Error = ProtocolError;

    /// Errors (writing nothing) on a null request id for `Stdout`/`Stderr`/`EndRequest`
    /// and on a `GetValuesResult` over 65535 bytes.
    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match item {
            Outgoing::Stdout { id, content } => {
                put_stream(dst, STDOUT, app_id(STDOUT, id)?, &content)
            }
            Outgoing::Stderr { id, content } => {
                put_stream(dst, STDERR, app_id(STDERR, id)?, &content)
            }
            Outgoing::EndRequest {
                id,
                app_status,
                protocol_status,
            } => {
                let [a, b, c, d] = app_status.to_be_bytes();
                let body = [a, b, c, d, protocol_status, 0, 0, 0];
                put_record(dst, END_REQUEST, app_id(END_REQUEST, id)?, &body);
            }
            Outgoing::GetValuesResult { pairs } => {
                let len = pairs
                    .iter()
                    .fold(0usize, |acc, (n, v)| acc.saturating_add(pair_len(n, v)));
                if len > MAX_CONTENT_LEN {
                    return Err(ProtocolError::ContentTooLong { len });
                }
                let mut body = BytesMut::with_capacity(len);
                encode_pairs(&pairs, &mut body);
                put_record(dst, GET_VALUES_RESULT, 0, &body);
            }
            Outgoing::UnknownType { record_type } => {
                put_record(dst, UNKNOWN_TYPE, 0, &[record_type, 0, 0, 0, 0, 0, 0, 0]);
            }
        }
        Ok(())
    }
}

fn app_id(record_type: u8, id: u16) -> Result<u16, ProtocolError> {
    match id {
        0 => Err(ProtocolError::NullRequestId { record_type }),
        id => Ok(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec as pvec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    macro_rules! assert_err {
        ($result:expr, $pat:pat $(if $guard:expr)?) => {{
            let err = $result.expect_err("expected an error");
            assert!(matches!(err, $pat $(if $guard)?), "unexpected error: {err}");
        }};
    }

    fn rec(record_type: u8, id: u16, content: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_stream(record_type, id, content, &mut out);
        out.to_vec()
    }

    fn begin(id: u16, role: u16, flags: u8) -> Vec<u8> {
        let [a, b] = role.to_be_bytes();
        rec(BEGIN_REQUEST, id, &[a, b, flags, 0, 0, 0, 0, 0])
    }

    fn begin_in(id: u16, role: u16, keep_conn: bool) -> Incoming {
        Incoming::BeginRequest {
            id,
            role,
            keep_conn,
        }
    }

    fn stream_in(record_type: u8, id: u16, b: &[u8]) -> Incoming {
        let content = Bytes::copy_from_slice(b);
        match record_type {
            PARAMS => Incoming::Params { id, content },
            STDIN => Incoming::Stdin { id, content },
            _ => Incoming::Data { id, content },
        }
    }

    fn pairs_bytes<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_pairs(pairs, &mut out);
        out.to_vec()
    }

    /// Decodes all of `buf` as `Framed` would, then `decode_eof` if `eof`.
    fn drain(
        c: &mut RecordCodec,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Vec<Incoming>, ProtocolError> {
        let mut out = Vec::new();
        while let Some(r) = c.decode(buf)? {
            out.push(r);
        }
        while eof && let Some(r) = c.decode_eof(buf)? {
            out.push(r);
        }
        Ok(out)
    }

    fn decode_split(bytes: &[u8], at: usize) -> Result<Vec<Incoming>, ProtocolError> {
        let (mut codec, mut buf) = (RecordCodec::new(), BytesMut::from(&bytes[..at]));
        let mut out = drain(&mut codec, &mut buf, false)?;
        buf.extend_from_slice(&bytes[at..]);
        out.extend(drain(&mut codec, &mut buf, true)?);
        Ok(out)
    }

    fn decode_bytes(bytes: &[u8]) -> Result<Vec<Incoming>, ProtocolError> {
        decode_split(bytes, bytes.len())
    }

    fn encode(item: Outgoing) -> Vec<u8> {
        let mut out = BytesMut::new();
        RecordCodec::new().encode(item, &mut out).unwrap();
        out.to_vec()
    }

    fn feed_all(limit: usize, chunks: &[&[u8]]) -> Result<Vec<Pair>, ProtocolError> {
        let mut p = ParamsParser::new(limit);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c)?);
        }
        p.finish().map(|()| out)
    }

    #[test]
    fn decodes_every_incoming_type() {
        let gv = pairs_bytes(&[("FCGI_MAX_CONNS", ""), ("FCGI_MPXS_CONNS", "")]);
        let mut s = [begin(1, RESPONDER, KEEP_CONN), begin(2, FILTER, 0xfe)].concat();
        s.extend(rec(ABORT_REQUEST, 1, &[]));
        for t in [PARAMS, STDIN, DATA] {
            s.extend(rec(t, 3, b"abc"));
        }
        s.extend(rec(GET_VALUES, 0, &gv));
        // Types we only send, and unknown ones, come back as Unknown.
        let unknown = [
            (END_REQUEST, 1),
            (STDOUT, 1),
            (STDERR, 2),
            (GET_VALUES_RESULT, 0),
            (UNKNOWN_TYPE, 0),
            (200, 0),
        ];
        for (t, id) in unknown {
            s.extend(rec(t, id, b"x"));
        }
        let mut want = vec![
            begin_in(1, RESPONDER, true),
            begin_in(2, FILTER, false),
            Incoming::AbortRequest { id: 1 },
        ];
        want.extend([PARAMS, STDIN, DATA].map(|t| stream_in(t, 3, b"abc")));
        let names = vec![b"FCGI_MAX_CONNS".to_vec(), b"FCGI_MPXS_CONNS".to_vec()];
        want.push(Incoming::GetValues { names });
        want.extend(unknown.map(|(record_type, id)| Incoming::Unknown { record_type, id }));
        assert_eq!(decode_bytes(&s).unwrap(), want);
        // A longer BEGIN body's extra bytes are ignored.
        let long = rec(BEGIN_REQUEST, 9, &[0, 2, 1, 0, 0, 0, 0, 0, 7, 7]);
        assert_eq!(
            decode_bytes(&long).unwrap(),
            [begin_in(9, AUTHORIZER, true)]
        );
    }

    #[test]
    fn padding_is_skipped_whatever_its_length_or_value() {
        let mut s = vec![1, STDIN, 0, 1, 0, 3, 255, 0, b'a', b'b', b'c'];
        s.extend([0xaa; 255]);
        s.extend([1, STDIN, 0, 1, 0, 1, 0, 0, b'd']); // unaligned, no padding
        s.extend([1, STDIN, 0, 1, 0, 0, 7, 0, 1, 2, 3, 4, 5, 6, 7]); // empty, padded
        let want = [b"abc", &b"d"[..], b""].map(|b| stream_in(STDIN, 1, b));
        assert_eq!(decode_bytes(&s).unwrap(), want);
        // Padding not all here: wait; EOF then is an error.
        let mut buf = BytesMut::from(&s[..200]);
        assert!(RecordCodec::new().decode(&mut buf).unwrap().is_none());
        let eof = RecordCodec::new().decode_eof(&mut buf);
        assert_err!(
            eof,
            ProtocolError::UnexpectedEof {
                buffered: 200,
                needed: 266
            }
        );
    }

    #[test]
    fn encodes_every_outgoing_type_exactly() {
        let out = encode(Outgoing::Stdout {
            id: 0x0102,
            content: Bytes::from_static(b"hello"),
        });
        assert_eq!(
            out,
            [
                1, 6, 1, 2, 0, 5, 3, 0, b'h', b'e', b'l', b'l', b'o', 0, 0, 0
            ]
        );
        let out = encode(Outgoing::Stderr {
            id: 2,
            content: Bytes::new(),
        });
        assert_eq!(out, [1, 7, 0, 2, 0, 0, 0, 0]);
        let end = Outgoing::EndRequest {
            id: 1,
            app_status: 0x0102_0304,
            protocol_status: OVERLOADED,
        };
        assert_eq!(
            encode(end),
            [1, 3, 0, 1, 0, 8, 0, 0, 1, 2, 3, 4, 2, 0, 0, 0]
        );
        let out = encode(Outgoing::UnknownType { record_type: 42 });
        assert_eq!(out, [1, 11, 0, 0, 0, 8, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0]);
        let pairs = vec![(b"FCGI_MPXS_CONNS".to_vec(), b"0".to_vec())];
        let out = encode(Outgoing::GetValuesResult {
            pairs: pairs.clone(),
        });
        assert_eq!(out[..8], [1, 10, 0, 0, 0, 18, 6, 0]);
        let recs = take_records(&mut BytesMut::from(&out[..])).unwrap();
        assert_eq!(decode_pairs(&recs[0].2).unwrap(), pairs);
        assert_eq!(
            parse_end_request(&[0, 0, 1, 0, 3, 0, 0, 0]),
            Some((256, UNKNOWN_ROLE))
        );
        assert_eq!(parse_end_request(&[0; 7]), None);
    }

    #[test]
    fn long_stdout_is_split_and_never_emits_a_stray_empty_record() {
        let cases = [
            (65535, vec![65535]),
            (131_070, vec![65535, 65535]),
            (131_071, vec![65535, 65535, 1]),
        ];
        for (len, want) in cases {
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let out = encode(Outgoing::Stdout {
                id: 5,
                content: content.clone().into(),
            });
            let mut buf = BytesMut::from(&out[..]);
            assert_eq!(buf.len() % 8, 0);
            let recs = take_records(&mut buf).unwrap();
            assert!(buf.is_empty() && recs.iter().all(|r| r.0 == STDOUT && r.1 == 5));
            assert_eq!(recs.iter().map(|r| r.2.len()).collect::<Vec<_>>(), want);
            assert_eq!(
                recs.iter().flat_map(|r| r.2.to_vec()).collect::<Vec<_>>(),
                content
            );
        }
    }

    #[test]
    fn encoder_rejects_null_ids_and_oversized_get_values_result() {
        let (mut c, mut out) = (RecordCodec::new(), BytesMut::new());
        let stdout = Outgoing::Stdout {
            id: 0,
            content: Bytes::from_static(b"x"),
        };
        let stderr = Outgoing::Stderr {
            id: 0,
            content: Bytes::new(),
        };
        let end = Outgoing::EndRequest {
            id: 0,
            app_status: 0,
            protocol_status: 0,
        };
        for item in [stdout, stderr, end] {
            assert_err!(
                c.encode(item, &mut out),
                ProtocolError::NullRequestId { .. }
            );
        }
        let pairs = vec![(vec![b'n'; 60_000], vec![b'v'; 5_528])]; // 65536 with prefixes
        let res = c.encode(Outgoing::GetValuesResult { pairs }, &mut out);
        assert_err!(res, ProtocolError::ContentTooLong { len: 65536 });
        assert!(out.is_empty());
    }

    #[test]
    fn pair_lengths_at_the_127_128_boundary_and_both_encodings() {
        for n in [0usize, 1, 127, 128, 129, 255, 256, 65_536] {
            let pair = (vec![b'n'; n], vec![b'v'; 255 - n.min(255)]);
            let pair = std::slice::from_ref(&pair);
            let enc = pairs_bytes(pair);
            if n < 128 {
                assert_eq!(enc[0] as usize, n);
            } else {
                assert_eq!(enc[..4], (n as u32 | 0x8000_0000).to_be_bytes());
            }
            assert_eq!(enc.len(), pair_len(&pair[0].0, &pair[0].1));
            assert_eq!(feed_all(1 << 20, &[&enc]).unwrap(), pair);
            assert_eq!(decode_pairs(&enc).unwrap(), pair);
        }
        // A 4-byte length may carry a small value.
        let enc = [0x80, 0, 0, 1, 0x80, 0, 0, 0, b'a'];
        assert_eq!(decode_pairs(&enc).unwrap(), [(b"a".to_vec(), vec![])]);
        assert_eq!(feed_all(100, &[&enc]).unwrap(), [(b"a".to_vec(), vec![])]);
    }

    fn sample_pairs() -> Vec<Pair> {
        vec![
            (b"SCRIPT_NAME".to_vec(), b"/x".to_vec()),
            (b"HTTP_IF_NONE_MATCH".to_vec(), vec![b'e'; 200]),
            (vec![b'N'; 130], b"".to_vec()),
            (b"".to_vec(), b"v".to_vec()),
            (b"REQUEST_METHOD".to_vec(), b"GET".to_vec()),
        ]
    }

    #[test]
    fn stream_split_at_every_byte_decodes_the_same() {
        let params = pairs_bytes(&sample_pairs());
        // Records cut inside a 4-byte length prefix (at 32) and inside a name (at 250).
        let (a, b, c) = (&params[..32], &params[32..250], &params[250..]);
        let mut s = begin(1, RESPONDER, KEEP_CONN);
        for (t, content) in [
            (PARAMS, a),
            (PARAMS, b),
            (PARAMS, c),
            (PARAMS, b""),
            (STDIN, b"body"),
            (STDIN, b""),
        ] {
            s.extend(rec(t, 1, content));
        }
        let want = decode_bytes(&s).unwrap();
        let mut expect = vec![begin_in(1, RESPONDER, true)];
        expect.extend([a, b, c, b""].map(|x| stream_in(PARAMS, 1, x)));
        expect.extend([&b"body"[..], b""].map(|x| stream_in(STDIN, 1, x)));
        assert_eq!(want, expect);
        for at in 0..=s.len() {
            assert_eq!(decode_split(&s, at).unwrap(), want, "split at {at}");
        }
        assert_eq!(feed_all(4096, &[a, b, c]).unwrap(), sample_pairs());
    }

    #[test]
    fn params_parser_split_at_every_byte_gives_the_same_pairs() {
        let enc = pairs_bytes(&sample_pairs());
        for at in 0..=enc.len() {
            let got = feed_all(enc.len(), &[&enc[..at], &enc[at..]]).unwrap();
            assert_eq!(got, sample_pairs(), "split at {at}");
        }
        let bytewise: Vec<&[u8]> = enc.chunks(1).collect();
        assert_eq!(feed_all(enc.len(), &bytewise).unwrap(), sample_pairs());
    }

    #[test]
    fn eof_inside_a_record_is_an_error_and_clean_eof_is_not() {
        let mut c = RecordCodec::new();
        assert!(c.decode_eof(&mut BytesMut::new()).unwrap().is_none());
        let mut buf = BytesMut::from(&[1u8, STDIN, 0, 1, 0, 100, 4, 0][..]);
        buf.extend_from_slice(&[0; 50]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(
            (112..4096).contains(&buf.capacity()),
            "reserve only the rest of one record"
        );
        assert_err!(
            c.decode_eof(&mut buf),
            ProtocolError::UnexpectedEof {
                buffered: 58,
                needed: 112
            }
        );
        let mut buf = BytesMut::from(&[1u8, 5, 0][..]);
        assert_err!(
            c.decode_eof(&mut buf),
            ProtocolError::UnexpectedEof {
                buffered: 3,
                needed: 8
            }
        );
        // Largest possible record: reservation stays within one record.
        let mut buf = BytesMut::from(&[1u8, STDIN, 0, 1, 0xff, 0xff, 0xff, 0][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 2 * (HEADER_LEN + MAX_CONTENT_LEN + 255));
    }

    #[test]
    fn pair_lengths_beyond_the_record_are_rejected() {
        let gv = |content: &[u8]| decode_bytes(&rec(GET_VALUES, 0, content));
        assert_err!(
            gv(&[5, 0, b'a']),
            ProtocolError::PairLengthExceedsRecord {
                declared: 7,
                remaining: 3
            }
        );
        assert_err!(
            gv(&[1, 0, b'a', 0x80, 0]),
            ProtocolError::PairHeaderTruncated { remaining: 2 }
        );
        assert_err!(
            gv(&[0x7f]),
            ProtocolError::PairHeaderTruncated { remaining: 1 }
        );
        let huge = gv(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert_err!(
            huge,
            ProtocolError::PairLengthExceedsRecord {
                declared: 0x8000_0004,
                remaining: 5
            }
        );
    }

    #[test]
    fn params_limit_is_enforced_on_declared_lengths_before_allocating() {
        let huge = [0x01, 0xff, 0xff, 0xff, 0xff, b'n'];
        let mut p = ParamsParser::new(1 << 20);
        assert_err!(
            p.feed(&huge),
            ProtocolError::ParamsTooLarge { limit: 1_048_576 }
        );
        assert_eq!(p.buffered_capacity(), 0, "nothing buffered or allocated");
        // Same with the length prefix straddling two records.
        let mut p = ParamsParser::new(1 << 20);
        assert!(p.feed(&huge[..2]).unwrap().is_empty());
        assert_err!(p.feed(&huge[2..]), ProtocolError::ParamsTooLarge { .. });
        assert!(p.buffered_capacity() < 64);
        // A value over the limit fails as soon as its prefix arrives.
        let enc = pairs_bytes(&[(b"a".to_vec(), vec![b'v'; 200])]);
        assert_err!(
            ParamsParser::new(100).feed(&enc[..5]),
            ProtocolError::ParamsTooLarge { limit: 100 }
        );
        // Raw bytes count too; exactly at the limit is fine.
        let enc = pairs_bytes(&[("a", "b"); 10]); // 40 bytes
        assert_eq!(feed_all(40, &[&enc[..20], &enc[20..]]).unwrap().len(), 10);
        assert_err!(
            feed_all(39, &[&enc[..20], &enc[20..]]),
            ProtocolError::ParamsTooLarge { .. }
        );
        assert_err!(
            feed_all(100, &[&enc[..21]]),
            ProtocolError::TruncatedParams { buffered: 1 }
        );
    }

    #[test]
    fn bad_headers_and_bodies_are_errors_not_panics() {
        for n in 0..8 {
            let res = decode_bytes(&rec(BEGIN_REQUEST, 1, &[0; 8][..n]));
            assert_err!(res, ProtocolError::BeginBodyTooShort(m) if m == n);
        }
        for v in [0u8, 2] {
            // Rejected from the header alone, before the body arrives.
            let mut buf = BytesMut::from(&[v, STDIN, 0, 1, 0, 10, 0, 0][..]);
            assert_err!(RecordCodec::new().decode(&mut buf), ProtocolError::UnsupportedVersion(x) if x == v);
            let mut buf = BytesMut::from(&[v, STDOUT, 0, 1, 0, 0, 0, 0][..]);
            assert_err!(take_records(&mut buf), ProtocolError::UnsupportedVersion(_));
        }
        for t in [BEGIN_REQUEST, ABORT_REQUEST, PARAMS, STDIN, DATA] {
            let res = decode_bytes(&rec(t, 0, &[0, 1, 0, 0, 0, 0, 0, 0]));
            assert_err!(res, ProtocolError::NullRequestId { record_type } if record_type == t);
        }
        let res = decode_bytes(&rec(GET_VALUES, 7, b""));
        assert_err!(
            res,
            ProtocolError::ManagementRecordWithId {
                record_type: 9,
                id: 7
            }
        );
    }

    #[test]
    fn non_utf8_and_case_are_kept_byte_exact() {
        let pairs = vec![
            (b"\xff\xfeN\x00ame".to_vec(), b"\x00\x80\xc3(val".to_vec()),
            (b"HTTP_X".to_vec(), b"A".to_vec()),
            (b"http_x".to_vec(), b"b".to_vec()),
        ];
        let enc = pairs_bytes(&pairs);
        assert_eq!(feed_all(1000, &[&enc[..3], &enc[3..]]).unwrap(), pairs);
    }

    #[test]
    fn ten_thousand_params_across_many_records() {
        let pairs: Vec<Pair> = (0..10_000)
            .map(|i| (format!("HTTP_X_{i}").into_bytes(), vec![b'v'; i % 300]))
            .collect();
        let enc = pairs_bytes(&pairs);
        let mut stream = rec(PARAMS, 1, &enc);
        stream.extend(rec(PARAMS, 1, b""));
        let (mut p, mut got) = (ParamsParser::new(enc.len()), Vec::new());
        let records = decode_bytes(&stream).unwrap();
        assert_eq!(records.len(), enc.len().div_ceil(MAX_CONTENT_LEN) + 1);
        for r in records {
            let Incoming::Params { content, .. } = r else {
                panic!("not params: {r:?}")
            };
            got.extend(p.feed(&content).unwrap());
        }
        p.finish().unwrap();
        assert_eq!(got, pairs);
    }

    #[test]
    fn client_helper_leaves_partial_records_in_the_buffer() {
        let mut buf = BytesMut::from(&[rec(STDOUT, 1, b"abc"), rec(STDOUT, 1, b"")].concat()[..]);
        buf.extend_from_slice(&[1, STDERR, 0, 1, 0, 5]);
        let recs = take_records(&mut buf).unwrap();
        assert_eq!(
            recs,
            [
                (STDOUT, 1, Bytes::from_static(b"abc")),
                (STDOUT, 1, Bytes::new())
            ]
        );
        assert_eq!(buf.len(), 6);
    }

    fn content() -> impl Strategy<Value = Bytes> {
        let pattern = |(n, s): (usize, u8)| {
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31) ^ s)
                .collect::<Vec<_>>()
        };
        let big = (65_530usize..140_000, any::<u8>()).prop_map(move |x| Bytes::from(pattern(x)));
        prop_oneof![4 => pvec(any::<u8>(), 0..40).prop_map(Bytes::from), 1 => big]
    }

    fn pairs(max: usize) -> impl Strategy<Value = Vec<Pair>> {
        pvec(
            (pvec(any::<u8>(), 0..300), pvec(any::<u8>(), 0..300)),
            0..max,
        )
    }

    fn arb_outgoing() -> impl Strategy<Value = Outgoing> {
        let id = 1u16..=u16::MAX;
        prop_oneof![
            (id.clone(), content()).prop_map(|(id, content)| Outgoing::Stdout { id, content }),
            (id.clone(), content()).prop_map(|(id, content)| Outgoing::Stderr { id, content }),
            (id, any::<u32>(), any::<u8>()).prop_map(|(id, app_status, protocol_status)| {
                Outgoing::EndRequest {
                    id,
                    app_status,
                    protocol_status,
                }
            }),
            pairs(8).prop_map(|pairs| Outgoing::GetValuesResult { pairs }),
            any::<u8>().prop_map(|record_type| Outgoing::UnknownType { record_type }),
        ]
    }

    fn arb_incoming() -> impl Strategy<Value = Incoming> {
        let id = 1u16..=u16::MAX;
        let known = [
            BEGIN_REQUEST,
            ABORT_REQUEST,
            PARAMS,
            STDIN,
            DATA,
            GET_VALUES,
        ];
        let unknown_type = any::<u8>().prop_filter("known type", move |t| !known.contains(t));
        prop_oneof![
            (id.clone(), any::<u16>(), any::<bool>())
                .prop_map(|(id, role, k)| begin_in(id, role, k)),
            id.clone().prop_map(|id| Incoming::AbortRequest { id }),
            (
                prop::sample::select(vec![PARAMS, STDIN, DATA]),
                id,
                content()
            )
                .prop_map(|(t, id, content)| stream_in(t, id, &content)),
            pvec(pvec(any::<u8>(), 0..300), 0..10).prop_map(|names| Incoming::GetValues { names }),
            (unknown_type, any::<u16>())
                .prop_map(|(record_type, id)| Incoming::Unknown { record_type, id }),
        ]
    }

    fn stream_parts(r: &Incoming) -> Option<(u8, u16, &Bytes)> {
        match r {
            Incoming::Params { id, content } => Some((PARAMS, *id, content)),
            Incoming::Stdin { id, content } => Some((STDIN, *id, content)),
            Incoming::Data { id, content } => Some((DATA, *id, content)),
            _ => None,
        }
    }

    fn encode_incoming(r: &Incoming) -> Vec<u8> {
        match r {
            Incoming::BeginRequest {
                id,
                role,
                keep_conn,
            } => begin(*id, *role, u8::from(*keep_conn)),
            Incoming::AbortRequest { id } => rec(ABORT_REQUEST, *id, b""),
            Incoming::GetValues { names } => {
                let pairs: Vec<(&[u8], &[u8])> = names.iter().map(|n| (&n[..], &b""[..])).collect();
                rec(GET_VALUES, 0, &pairs_bytes(&pairs))
            }
            Incoming::Unknown { record_type, id } => rec(*record_type, *id, b""),
            stream => stream_parts(stream).map_or_else(Vec::new, |(t, id, c)| rec(t, id, c)),
        }
    }

    proptest! {
        #[test]
        fn outgoing_encode_decode_is_identity(item in arb_outgoing()) {
            let mut buf = BytesMut::from(&encode(item.clone())[..]);
            prop_assert_eq!(buf.len() % 8, 0);
            let recs = take_records(&mut buf).unwrap();
            prop_assert!(buf.is_empty());
            let (t, id, first) = recs[0].clone();
            prop_assert!(recs.iter().all(|r| r.2.len() <= MAX_CONTENT_LEN && r.0 == t && r.1 == id));
            prop_assert!(recs.len() == 1 || recs.iter().all(|r| !r.2.is_empty()), "stray empty record");
            let joined = Bytes::from(recs.iter().flat_map(|r| r.2.to_vec()).collect::<Vec<_>>());
            let back = match t {
                STDOUT => Outgoing::Stdout { id, content: joined },
                STDERR => Outgoing::Stderr { id, content: joined },
                END_REQUEST => {
                    let (app_status, protocol_status) = parse_end_request(&first).unwrap();
                    Outgoing::EndRequest { id, app_status, protocol_status }
                }
                GET_VALUES_RESULT => Outgoing::GetValuesResult { pairs: decode_pairs(&first).unwrap() },
                _ => Outgoing::UnknownType { record_type: first[0] },
            };
            prop_assert_eq!(back, item);
        }

        #[test]
        fn incoming_encode_decode_is_identity(r in arb_incoming(), at in any::<Index>()) {
            let enc = encode_incoming(&r);
            let got = decode_split(&enc, at.index(enc.len() + 1)).unwrap();
            if let Some((t, id, content)) = stream_parts(&r) {
                // Long content arrives as several records; re-join them.
                let parts: Vec<_> = got.iter().filter_map(stream_parts).collect();
                prop_assert_eq!(parts.len(), got.len());
                prop_assert_eq!(parts.len(), content.len().div_ceil(MAX_CONTENT_LEN).max(1));
                prop_assert!(parts.iter().all(|p| p.0 == t && p.1 == id));
                let joined: Vec<u8> = parts.iter().flat_map(|p| p.2.to_vec()).collect();
                prop_assert_eq!(&joined[..], &content[..]);
            } else {
                prop_assert_eq!(got, vec![r]);
            }
        }

        #[test]
        fn pairs_encode_parse_is_identity(ps in pairs(20), cuts in pvec(any::<Index>(), 0..4)) {
            let enc = pairs_bytes(&ps);
            prop_assert_eq!(&decode_pairs(&enc).unwrap(), &ps);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(enc.len() + 1)).collect();
            cuts.extend([0, enc.len()]);
            cuts.sort_unstable();
            let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &enc[w[0]..w[1]]).collect();
            prop_assert_eq!(feed_all(enc.len(), &chunks).unwrap(), ps);
        }

        #[test]
        fn hostile_input_never_panics(
            recs in pvec((0u8..13, any::<u16>(), pvec(any::<u8>(), 0..40)), 0..6),
            raw in pvec(any::<u8>(), 0..300),
            cut in any::<Index>(),
            limit in 0usize..1000,
        ) {
            // Well-framed records with garbage bodies, cut anywhere, and raw garbage.
            let s: Vec<u8> = recs.iter().flat_map(|(t, id, c)| rec(*t, *id, c)).collect();
            let _ = decode_bytes(&s[..cut.index(s.len() + 1)]);
            let _ = decode_bytes(&raw);
            let _ = take_records(&mut BytesMut::from(&raw[..]));
            let _ = decode_pairs(&raw);
            let _ = feed_all(limit, &[&raw[..raw.len() / 2], &raw[raw.len() / 2..]]);
        }
    }
}
