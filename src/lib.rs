//! placeholder
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod answer;
mod body;
mod clock;
mod cookie;
mod error;
mod expired;
mod future;
mod handle;
mod layer;
mod routes;
mod service;
pub mod store;

pub use body::ResponseBody;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{ConfigError, StoreError};
pub use expired::{login_timeout_status, Expiry, DEFAULT_BODY, REASON_PHRASE};
pub use future::ResponseFuture;
pub use handle::{SessionHandle, SessionInfo};
pub use layer::{
    Builder, SessionTimeoutLayer, DEFAULT_COOKIE_NAME, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ID_LEN,
    DEFAULT_TOMBSTONE_RETENTION,
};
pub use routes::RequestHead;
pub use service::SessionTimeout;
pub use store::{ExpiryReason, MemoryStore, SessionStore};

#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
