//! The responder driven by a raw FastCGI client straight to its socket: the protocol, and a
//! hostile peer. After each case the responder still answers a normal request.

mod common;
mod fastcgi_support;

use common::TempDir;
use fastcgi_support::*;

#[test]
fn answers_a_plain_request() {
    let dir = TempDir::new("fcgi-plain");
    write_scripts(&dir);
    let responder = Responder::start(&dir.path, &dir.join("hc.sock"), &[]);
    assert_still_serving(&responder, &dir.path);
}
