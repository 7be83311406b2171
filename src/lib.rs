//! http-conditional: answers 304 Not Modified and 412 Precondition Failed for legacy CGI
//! scripts without running them, and adds validators, cache policy and compression to their
//! output when they do run.
//!
//! The front ends ([`cgi`], [`fastcgi`], [`serve`]) turn their input into a
//! [`request::Request`] and hand it to the [`engine`], which never knows which one it serves.

pub mod cache_policy;
pub mod cgi;
pub mod cgi_head;
pub mod cli;
pub mod delivery;
pub mod encoding;
pub mod engine;
pub mod etag;
pub mod explain;
pub mod failure;
pub mod fastcgi;
pub mod front_end;
pub mod launch;
pub mod log;
pub mod preconditions;
pub mod request;
pub mod response;
pub mod runner;
pub mod script;
// rust-version 1.88 lets clippy ask for let-chains in place of nested ifs, and `cargo doc`
// now runs with -D warnings: serve/ has one nested if and one doc link to a private module,
// left to the engineer who owns serve/ now (remove these allows with them).
#[allow(clippy::collapsible_if, rustdoc::private_intra_doc_links)]
pub mod serve;
pub mod sidecar;
pub mod slots;
pub mod timestamp;
pub mod validators;
