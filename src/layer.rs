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
