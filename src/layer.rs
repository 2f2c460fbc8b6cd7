//! [`SessionTimeoutLayer`], the tower [`Layer`] that makes [`SessionTimeout`] services.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::config::Config;
use crate::store::Policy;
use crate::{MemoryStore, SessionStore, SessionTimeout, SessionTimeoutBuilder, Timestamp};

/// A tower [`Layer`] that enforces idle and absolute session timeouts, answering an expired
/// session with `440 Login Time-out`.
///
/// Made by [`SessionTimeoutLayer::builder`]; see the [crate docs](crate) for the whole picture.
/// Cloning is cheap: clones share the configuration and the store.
pub struct SessionTimeoutLayer<St = MemoryStore> {
    pub(crate) config: Arc<Config<St>>,
}

impl SessionTimeoutLayer<MemoryStore> {
    /// A builder with the defaults: a [`MemoryStore`], a 20-minute idle timeout, no absolute
    /// timeout, cookie `id`, fail-closed.
    pub fn builder() -> SessionTimeoutBuilder<MemoryStore> {
        SessionTimeoutBuilder::new(MemoryStore::new())
    }
}

impl<St: SessionStore> SessionTimeoutLayer<St> {
    /// The store sessions are tracked in.
    pub fn store(&self) -> &St {
        &self.config.store
    }

    /// The timeouts in force.
    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    /// The sessions of each owner, to list and end them (admin tools, "sign out
    /// everywhere"); see [`Sessions`](crate::Sessions).
    pub fn sessions(&self) -> crate::Sessions {
        crate::Sessions::new(Arc::clone(&self.config))
    }

    /// Starts the announcer: a task that, every
    /// [`sweep_interval`](crate::SessionTimeoutBuilder::sweep_interval), claims the session
    /// ends due from the store and hands them to the
    /// [`on_session_end`](crate::SessionTimeoutBuilder::on_session_end) hook. Start one per
    /// app instance; the store keeps them from announcing an end twice. It runs until the
    /// returned handle is aborted or the runtime shuts down; a store error is logged and the
    /// next sweep tries again.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    pub fn spawn_announcer(&self) -> tokio::task::JoinHandle<()> {
        let config = Arc::clone(&self.config);
        tokio::spawn(async move {
            let mut sweeps = tokio::time::interval(config.sweep_interval);
            sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                sweeps.tick().await;
                if let Err(error) = crate::announcer::announce_once(&config).await {
                    config.errors.record(
                        &error,
                        "did not announce session ends (the next sweep retries)",
                    );
                }
            }
        })
    }

    /// Runs one sweep of the announcer now and answers how many ends the hook announced:
    /// for tests (with a manual clock) and for apps that schedule sweeps themselves.
    pub async fn announce_now(&self) -> Result<usize, crate::StoreError> {
        crate::announcer::announce_once(&self.config).await
    }

    /// How many session ends this instance dropped after their hook failed
    /// [`HOOK_ATTEMPTS`](crate::HOOK_ATTEMPTS) times.
    pub fn announcements_dropped(&self) -> u64 {
        self.config.announcements.dropped()
    }

    /// The current time by the layer's clock.
    pub fn now(&self) -> Timestamp {
        self.config.now()
    }
}

impl<St> Clone for SessionTimeoutLayer<St> {
    fn clone(&self) -> Self {
        SessionTimeoutLayer {
            config: Arc::clone(&self.config),
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for SessionTimeoutLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTimeoutLayer")
            .field("store", &self.config.store)
            .field("policy", &self.config.policy)
            .field("cookie_name", &self.config.cookie.name)
            .field("routes", &self.config.routes)
            .field("fail_open", &self.config.fail_open)
            .finish_non_exhaustive()
    }
}

impl<S, St> Layer<S> for SessionTimeoutLayer<St> {
    type Service = SessionTimeout<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionTimeout::new(inner, Arc::clone(&self.config))
    }
}
