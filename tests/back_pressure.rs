//! Back-pressure: the layer is ready exactly when its inner service is, so a concurrency
//! limit or a load shedder below it still works (tower's `poll_ready` contract).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use tower::{Layer, Service, ServiceExt};
use tower_session_timeout::store::{Begin, SessionKey};
use tower_session_timeout::{ManualClock, SessionStore, SessionTimeoutLayer};

/// What the inner service's `poll_ready` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Not ready, as a concurrency limit at capacity.
    Busy,
    Ready,
    /// Failed, as a service that has shut down.
    Broken,
}

#[derive(Debug, PartialEq, Eq)]
struct Overloaded;

/// An inner service whose readiness the test sets, shared by its clones. It only answers a
/// call it was readied for, as tower services may.
#[derive(Clone)]
struct Gate {
    readiness: Arc<Mutex<Readiness>>,
    readied: bool,
}

impl Gate {
    fn new(readiness: Readiness) -> (Self, Arc<Mutex<Readiness>>) {
        let readiness = Arc::new(Mutex::new(readiness));
        let gate = Gate {
            readiness: Arc::clone(&readiness),
            readied: false,
        };
        (gate, readiness)
    }
}

impl Service<Request<Empty<Bytes>>> for Gate {
    type Response = Response<Full<Bytes>>;
    type Error = Overloaded;
    type Future = std::future::Ready<Result<Self::Response, Overloaded>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Overloaded>> {
        match *self.readiness.lock().unwrap() {
            Readiness::Busy => Poll::Pending,
            Readiness::Ready => {
                self.readied = true;
                Poll::Ready(Ok(()))
            }
            Readiness::Broken => Poll::Ready(Err(Overloaded)),
        }
    }

    fn call(&mut self, _request: Request<Empty<Bytes>>) -> Self::Future {
        assert!(
            std::mem::take(&mut self.readied),
            "called without poll_ready"
        );
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"inner")))))
    }
}

fn poll_ready_once<S, R>(service: &mut S) -> Poll<Result<(), S::Error>>
where
    S: Service<R>,
{
    service.poll_ready(&mut Context::from_waker(Waker::noop()))
}

fn layer() -> SessionTimeoutLayer {
    SessionTimeoutLayer::builder()
        .clock(ManualClock::new())
        .build()
        .expect("valid config")
}

#[test]
fn not_ready_while_the_inner_service_is_not() {
    let (gate, readiness) = Gate::new(Readiness::Busy);
    let mut service = layer().layer(gate);
    assert!(
        poll_ready_once::<_, Request<Empty<Bytes>>>(&mut service).is_pending(),
        "a busy inner service holds the layer back"
    );
    *readiness.lock().unwrap() = Readiness::Ready;
    assert!(matches!(
        poll_ready_once::<_, Request<Empty<Bytes>>>(&mut service),
        Poll::Ready(Ok(()))
    ));
}

#[test]
fn an_inner_readiness_error_is_the_layers() {
    let (gate, _readiness) = Gate::new(Readiness::Broken);
    let mut service = layer().layer(gate);
    assert!(matches!(
        poll_ready_once::<_, Request<Empty<Bytes>>>(&mut service),
        Poll::Ready(Err(Overloaded))
    ));
}

/// Through `ServiceExt::ready`, as hyper and axum drive it: a request on an active session
/// waits for the inner service, and the call that follows the store's answer reaches the
/// inner service it readied (`Gate` refuses any other).
#[tokio::test]
async fn a_request_waits_for_the_inner_service() {
    let layer = layer();
    let key = SessionKey::from_id("session-0123456789abcdef");
    let begun = layer
        .store()
        .begin(
            &key,
            layer.now(),
            layer.policy(),
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .expect("begin");
    assert_eq!(begun, Begin::Began);
    let (gate, readiness) = Gate::new(Readiness::Busy);
    let mut service = layer.layer(gate);
    let mut ready = std::pin::pin!(service.ready());
    assert!(
        poll_once(&mut ready).is_pending(),
        "still waiting on the inner service"
    );
    *readiness.lock().unwrap() = Readiness::Ready;
    let Poll::Ready(Ok(service)) = poll_once(&mut ready) else {
        panic!("ready once the inner service is");
    };
    let request = Request::get("/")
        .header("cookie", "id=session-0123456789abcdef")
        .body(Empty::new())
        .unwrap();
    let response = service.call(request).await.expect("inner answers");
    assert_eq!(response.status(), StatusCode::OK);
}

/// Polls a future once, with a waker that does nothing: the test sets the readiness itself.
fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// An inner service with one permit among all its clones, as tower's `ConcurrencyLimit`: a
/// clone holds the permit from a ready `poll_ready` until it is called or dropped.
struct OnePermit {
    free: Arc<Mutex<bool>>,
    held: bool,
}

impl Clone for OnePermit {
    fn clone(&self) -> Self {
        // A clone starts without the permit, as a `ConcurrencyLimit` clone does.
        OnePermit {
            free: Arc::clone(&self.free),
            held: false,
        }
    }
}

impl Drop for OnePermit {
    fn drop(&mut self) {
        if self.held {
            *self.free.lock().unwrap() = true;
        }
    }
}

impl Service<Request<Empty<Bytes>>> for OnePermit {
    type Response = Response<Full<Bytes>>;
    type Error = Overloaded;
    type Future = std::future::Ready<Result<Self::Response, Overloaded>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Overloaded>> {
        let mut free = self.free.lock().unwrap();
        if self.held || std::mem::take(&mut *free) {
            self.held = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _request: Request<Empty<Bytes>>) -> Self::Future {
        assert!(self.held, "called without poll_ready");
        // The response is ready at once, so the permit goes back at once.
        self.held = false;
        *self.free.lock().unwrap() = true;
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"inner")))))
    }
}

/// The layer readies its inner service and then answers 440 itself (an unknown session on
/// `MemoryStore`, which answers at once): the readied service's permit goes back, so another
/// clone of the service, another connection, is not held up until this one's next request.
#[tokio::test]
async fn a_request_the_layer_answers_itself_releases_the_inner_services_readiness() {
    let permit = OnePermit {
        free: Arc::new(Mutex::new(true)),
        held: false,
    };
    let mut first = layer().layer(permit);
    let mut second = first.clone();
    let service = first.ready().await.expect("ready");
    let request = Request::get("/")
        .header("cookie", "id=unknown-session-0123456789")
        .body(Empty::new())
        .unwrap();
    let response = service.call(request).await.expect("answered");
    assert_eq!(response.status().as_u16(), 440);
    assert!(
        matches!(
            poll_ready_once::<_, Request<Empty<Bytes>>>(&mut second),
            Poll::Ready(Ok(()))
        ),
        "the permit the first service readied is free again"
    );
}
