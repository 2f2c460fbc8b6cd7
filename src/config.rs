//! [`Config`]: everything one layer was configured with, shared by its services.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;

use crate::announcer::{Announcements, EndHook};
use crate::cookie::{CookieSettings, IdBounds};
use crate::error_log::ErrorLog;
use crate::expired::Responder;
use crate::expiry_hook::{ExpiryEvent, ExpiryHook};
use crate::routes::Routes;
use crate::store::{Policy, SessionKey};
use crate::{Clock, ExpiryReason, Timestamp};

/// Everything one layer was configured with, shared by its services.
pub(crate) struct Config<St> {
    pub(crate) store: St,
    pub(crate) policy: Policy,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cookie: CookieSettings,
    pub(crate) routes: Routes,
    pub(crate) login_url: Option<String>,
    pub(crate) responder: Option<Responder>,
    pub(crate) fail_open: bool,
    pub(crate) id_bounds: IdBounds,
    pub(crate) seconds_left_header: Option<HeaderName>,
    pub(crate) store_timeout: Option<Duration>,
    pub(crate) on_expiry: Option<ExpiryHook>,
    pub(crate) on_session_end: Option<EndHook>,
    pub(crate) sweep_interval: Duration,
    pub(crate) announcements: Announcements,
    pub(crate) errors: ErrorLog,
    /// The browser client script with its prelude, when served.
    pub(crate) client_script: Option<Bytes>,
}

impl<St> Config<St> {
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_system_time(self.clock.now())
    }

    /// Logs a session that expired or ended, and tells the app's hook.
    pub(crate) fn report_expiry(&self, session: SessionKey, reason: ExpiryReason, at: Timestamp) {
        tracing::info!(%session, %reason, "session over");
        if let Some(hook) = &self.on_expiry {
            hook(&ExpiryEvent::new(session, reason, at));
        }
    }
}
