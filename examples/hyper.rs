//! The layer on a plain hyper 1 server, no framework.
//!
//! ```text
//! cargo run --example hyper
//! curl -i localhost:3001/login            # sets the session cookie
//! curl -i -b id=<value> localhost:3001/   # 200 while active, 440 once idle for 30 s
//! ```

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;
use tower_session_timeout::SessionTimeoutLayer;

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match request.uri().path() {
        "/login" => {
            let id = format!("{:032x}", rand::random::<u128>());
            Response::builder()
                .header(
                    "set-cookie",
                    format!("id={id}; Path=/; HttpOnly; SameSite=Lax"),
                )
                .body(Full::new(Bytes::from(format!("signed in with id {id}\n"))))
        }
        _ => Response::builder().body(Full::new(Bytes::from_static(b"hello, active session\n"))),
    };
    // Both builders above get only valid static parts.
    Ok(response.unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let layer = SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(30))
        .exempt_path("/login")
        .build()?;
    let service = ServiceBuilder::new().layer(layer).service_fn(handle);

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(3001);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {error}");
            }
        });
    }
}
