//! http-conditional: answers 304 Not Modified and 412 Precondition Failed for legacy CGI
//! scripts without running them, and adds validators, cache policy and compression to their
//! output when they do run.
//!
//! The front ends ([`cgi`], [`fastcgi`], [`serve`]) turn their input into a
//! [`request::Request`] and hand it to the [`engine`], which never knows which one it serves.
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod apache_action;
pub mod backend;
pub mod cache_policy;
pub mod cgi;
pub mod cgi_head;
pub mod check;
pub mod cli;
pub mod declaration;
pub mod declaration_cache;
pub mod declarations;
pub mod delivery;
pub mod digest_cache;
pub mod encoding;
pub mod engine;
pub mod etag;
pub mod explain;
pub mod failure;
pub mod fastcgi;
pub mod fastcgi_protocol;
pub mod file_stamp;
pub mod folder_walk;
pub mod front_end;
pub mod job;
pub mod launch;
pub mod log;
pub mod metrics;
pub mod path_template;
pub mod preconditions;
pub mod probe_cache;
pub mod process_start;
pub mod range;
pub mod regular_file;
pub mod request;
pub mod response;
pub mod rules;
pub mod runner;
pub mod script;
pub mod serve;
pub mod shebang;
pub mod sidecar;
pub mod slots;
pub mod stderr_relay;
pub mod timestamp;
pub mod validators;
