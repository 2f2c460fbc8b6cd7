//! Helpers shared by the integration tests; each test file uses a part of them.
#![allow(dead_code)]

pub mod announce_rows;
pub mod announce_suite;
pub mod app;
pub mod capture;
pub mod cluster;
pub mod demo_binary;
pub mod failing;
pub mod faulty;
pub mod long;
pub mod model;
pub mod near_cache;
pub mod owner_races;
pub mod owner_suite;
pub mod previous_table;
pub mod redis_announce;
pub mod redis_owners;
pub mod redis_server;
pub mod sql_cases;
pub mod store_suite;
pub mod via_cache;
