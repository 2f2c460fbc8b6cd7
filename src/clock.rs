//! Where the layer's time comes from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant in whole milliseconds since the Unix epoch.
///
/// Stores keep and compare these. It is wall-clock time rather than a monotonic
/// [`Instant`](std::time::Instant) because several app instances sharing one store must agree
/// on it; the stores never let a clock that steps backwards make a session younger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }

    /// Converts a [`SystemTime`]; times before the Unix epoch become the epoch.
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = time.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
        Timestamp(millis)
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// This instant plus `duration`, saturating at the far future.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// How long after `earlier` this instant is; zero when `earlier` is not earlier.
    ///
    /// Saturating is what keeps a clock that stepped backwards from making a session younger.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A source of the current time.
///
/// The layer reads the time once per request from its clock. Tests replace the
/// [`SystemClock`] with a [`ManualClock`] to cross deadlines without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; clones share one time.
///
/// ```
/// use std::time::Duration;
/// use tower_session_timeout::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let before = clock.now();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::starting_at(Timestamp::from_unix_millis(1_767_225_600_000).to_system_time())
    }

    /// A clock stopped at `start`.
    pub fn starting_at(start: SystemTime) -> Self {
        ManualClock {
            millis: Arc::new(AtomicU64::new(Timestamp::from_system_time(start).0)),
        }
    }

    /// Moves the clock forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }

    /// Sets the clock to `time`, which may be earlier than now (a clock stepping backwards).
    pub fn set(&self, time: SystemTime) {
        self.millis
            .store(Timestamp::from_system_time(time).0, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        Timestamp(self.millis.load(Ordering::SeqCst)).to_system_time()
    }
}
