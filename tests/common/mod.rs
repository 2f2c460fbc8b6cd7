//! Helpers shared by the integration tests; each test file uses a part of them.
#![allow(dead_code)]

pub mod app;
pub mod capture;
pub mod failing;
pub mod faulty;
pub mod long;
pub mod model;
pub mod store_suite;
