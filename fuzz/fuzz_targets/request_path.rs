//! The request path: any `Cookie` header, any `Set-Cookie` from the app, any path.
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::request_path(data));
