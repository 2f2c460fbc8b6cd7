//! Store URLs carry passwords; none appears in a store's `Debug`, in an error, or in the demo's
//! output (security issue #11).

mod common;

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

const PASSWORD: &str = "s3cret-Pw";

/// Runs the demo on `store` and returns what it printed before serving (or failing).
async fn demo_start_up(store: &str) -> String {
    let mut child = tokio::process::Command::new(common::demo_binary::example_binary())
        .env("PORT", "0")
        .env("SESSION_STORE", store)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example is built by cargo test");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut printed = String::new();
    // Until it says what it serves with, or exits; bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut settings_printed = false;
    let mut stdout_open = true;
    let mut stderr_open = true;
    while (stdout_open || stderr_open) && !settings_printed {
        tokio::select! {
            line = stdout.next_line(), if stdout_open => match line.unwrap() {
                Some(line) => {
                    settings_printed = line.starts_with("Idle timeout");
                    printed.push_str(&line);
                    printed.push('\n');
                }
                None => stdout_open = false,
            },
            line = stderr.next_line(), if stderr_open => match line.unwrap() {
                Some(line) => { printed.push_str(&line); printed.push('\n'); }
                None => stderr_open = false,
            },
            () = tokio::time::sleep_until(deadline) => panic!("the demo said nothing in time: {printed}"),
        }
    }
    let _ = child.kill().await;
    printed
}

fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password: {text}"
    );
}

#[tokio::test]
async fn the_demo_prints_no_password() {
    // A store that cannot be reached: the demo fails, and says why without the password.
    let refused = format!("redis://:{PASSWORD}@127.0.0.1:1/0");
    let printed = demo_start_up(&refused).await;
    assert_no_password("the demo's error", &printed);
    let unknown = format!("mongodb://u:{PASSWORD}@127.0.0.1/x");
    let printed = demo_start_up(&unknown).await;
    assert_no_password("the demo's error", &printed);
    assert!(printed.contains("***"), "{printed}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_store_and_demo_show_no_password() {
    let redis = common::redis_server::OwnRedis::start_with_password(PASSWORD);
    let store = tower_session_timeout::RedisStore::open(&redis.url())
        .await
        .expect("connects with the password");
    assert_no_password("RedisStore's Debug", &format!("{store:?}"));
    let wrong = redis.url().replace(PASSWORD, "not-the-password");
    let error = tower_session_timeout::RedisStore::open(&wrong)
        .await
        .expect_err("a wrong password is refused");
    assert_no_password("the error", &format!("{error} {error:?}"));

    let printed = demo_start_up(&redis.url()).await;
    assert_no_password("the demo's start-up output", &printed);
    assert!(printed.contains(":***@"), "{printed}");
    let cluster_url = format!("redis-cluster://:{PASSWORD}@127.0.0.1:1");
    let printed = demo_start_up(&cluster_url).await;
    assert_no_password("the demo's start-up output", &printed);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store_and_demo_show_no_password() {
    // Trust authentication ignores the password, so the URL connects and still carries one.
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:5432/test");
    let store = tower_session_timeout::PostgresStore::connect(&url)
        .await
        .expect("connects");
    assert_no_password("PostgresStore's Debug", &format!("{store:?}"));
    let unreachable = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/test");
    let error = tower_session_timeout::PostgresStore::connect(&unreachable)
        .await
        .expect_err("nothing listens on port 1");
    assert_no_password("the error", &format!("{error} {error:?}"));

    let printed = demo_start_up(&url).await;
    assert_no_password("the demo's start-up output", &printed);
    assert!(printed.contains(":***@"), "{printed}");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_debug_shows_no_secret() {
    let path =
        std::env::temp_dir().join(format!("tst-credentials-{:016x}.db", rand::random::<u64>()));
    let store = tower_session_timeout::SqliteStore::open(&path)
        .await
        .expect("open");
    let debug = format!("{store:?}");
    assert_no_password("SqliteStore's Debug", &debug);
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
