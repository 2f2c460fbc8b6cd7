//! Which cookie is the session: any `Cookie` headers, read by the layer and by every cookie
//! reader an app may use; the layer refuses the request or they agree on the id.
#![no_main]

#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::cookie_readers(data));
