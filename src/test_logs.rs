//! For unit tests: the log lines written on this thread, captured.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The lines captured by [`capture`].
#[derive(Clone, Default)]
pub(crate) struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// The lines that hold `text` (a level: `"WARN"`, or a message).
    pub(crate) fn at(&self, text: &str) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter(|line| line.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

/// Captures the lines of INFO and above logged on this thread while the guard lives (a
/// current-thread runtime's tasks included).
pub(crate) fn capture() -> (Lines, tracing::subscriber::DefaultGuard) {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    (lines, tracing::subscriber::set_default(subscriber))
}
