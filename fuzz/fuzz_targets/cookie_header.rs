//! Cookie parsing: any `Cookie` header on an exempt route, checked by what reaches the app.
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::cookie_header(data));
