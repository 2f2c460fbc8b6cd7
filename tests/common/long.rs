//! The long mode of the model and race tests. CI runs them short; `TST_LONG=1` runs each
//! store's model test for [`CASES`] cases and its race for [`RACE_ROUNDS`] rounds, the size
//! the claims they carry ("every store matches the model", "never revived") need:
//!
//! ```text
//! TST_LONG=1 cargo test --release --all-features --test model --test races -- --test-threads=1
//! ```

/// The environment variable that turns the long mode on (any value but empty or `0`).
pub const VAR: &str = "TST_LONG";

/// Model cases per store in the long mode.
pub const CASES: u32 = 10_000;

/// Race rounds per store in the long mode (each round races two sessions, one per deadline).
pub const RACE_ROUNDS: u32 = 10_000;

/// Whether the long mode is on.
pub fn on() -> bool {
    std::env::var_os(VAR).is_some_and(|value| !value.is_empty() && value != "0")
}

/// `short` cases in CI, [`CASES`] in the long mode.
pub fn cases(short: u32) -> u32 {
    if on() {
        CASES
    } else {
        short
    }
}

/// `short` race rounds in CI, [`RACE_ROUNDS`] in the long mode.
pub fn race_rounds(short: u32) -> u32 {
    if on() {
        RACE_ROUNDS
    } else {
        short
    }
}
