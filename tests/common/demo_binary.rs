//! The demo binary (`examples/axum_login`, which `cargo test` builds beside the tests), talked
//! to over raw HTTP/1.1 as curl would, every wait bounded.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// How long one exchange with the demo may take.
const WAIT: Duration = Duration::from_secs(10);

/// The built demo binary.
pub fn example_binary() -> std::path::PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    deps.parent().unwrap().join("examples").join("axum_login")
}

/// A demo process serving on a free port; killed when dropped.
pub struct Demo {
    pub child: Child,
    pub address: String,
    /// What it prints after its first line (the settings line next).
    pub lines: Lines<BufReader<ChildStdout>>,
}

/// Starts the demo on port 0 with `env` set (and `SESSION_STORE` unset unless given), and
/// waits for the line that names its address.
pub async fn start(env: &[(&str, &str)]) -> Demo {
    let mut command = tokio::process::Command::new(example_binary());
    command.env("PORT", "0").env_remove("SESSION_STORE");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example is built by cargo test");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Log lines (a driver's notices at start-up) may come first.
    let listening = async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("a line naming the address");
            if line.starts_with("Demo listening on ") {
                return line;
            }
        }
    };
    let first = tokio::time::timeout(Duration::from_secs(30), listening)
        .await
        .expect("the demo starts in time");
    let address = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    Demo {
        child,
        address,
        lines,
    }
}

/// Sends `request` as it stands on one connection (`Connection: close`) and returns the whole
/// response.
pub async fn raw_request(address: &str, request: &str) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the demo answered in time")
}

/// `GET path`, with `Cookie: <cookie>` when given.
pub async fn get(address: &str, path: &str, cookie: Option<&str>) -> String {
    let cookie = cookie.map_or(String::new(), |cookie| format!("Cookie: {cookie}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: demo\r\n{cookie}Connection: close\r\n\r\n");
    raw_request(address, &request).await
}

/// Signs in as ada through `POST /login` and returns the session cookie (`id=…`).
pub async fn sign_in(address: &str) -> String {
    sign_in_as(address, "username=ada&password=secret").await
}

/// `POST path` with `Cookie: <cookie>`, asking for JSON.
pub async fn post(address: &str, path: &str, cookie: &str) -> String {
    let request = format!("POST {path} HTTP/1.1\r\nHost: demo\r\nCookie: {cookie}\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    raw_request(address, &request).await
}

/// `GET path` with `Cookie: <cookie>`, asking for JSON.
pub async fn get_json(address: &str, path: &str, cookie: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: demo\r\nCookie: {cookie}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    raw_request(address, &request).await
}

/// The body of a raw response.
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Signs in through `POST /login` with this form body and returns the session cookie.
pub async fn sign_in_as(address: &str, body: &str) -> String {
    let login = raw_request(
        address,
        &format!(
            "POST /login HTTP/1.1\r\nHost: demo\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(login.starts_with("HTTP/1.1 303 See Other"), "{login}");
    login
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}
