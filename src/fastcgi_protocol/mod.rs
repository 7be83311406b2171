//! The FastCGI 1.0 wire protocol (Open Market, 1996; section numbers below refer to it),
//! spoken in both directions: records and name-value pairs, nothing about what a responder or
//! a client does with them.
//!
//! Everything read from the wire is length-checked before it is sliced or allocated: no more
//! than one record (8 + 65535 + 255 bytes) is held ahead, and name-value pair lengths are
//! checked against the record or the caller's limit first.

pub mod pairs;
pub mod record;

pub use pairs::{Pair, ParamsParser, decode_pairs, encode_pairs};
pub use record::*;
