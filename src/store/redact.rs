//! [`redact_credentials`]: store URLs without their passwords, for logs and `Debug`.

use std::borrow::Cow;

/// What a password is replaced with.
const MASK: &str = "***";

/// `text` with the password of every URL in it replaced by `***`: `redis://:secret@h/0`
/// becomes `redis://:***@h/0`, `postgres://u:pw@h/db` becomes `postgres://u:***@h/db`. The
/// user name, host and the rest stay, so the line still says where the store is.
///
/// Works on a bare URL, on a seed list (`redis-cluster://:pw@a:7000,b:7001`) and on any text
/// that embeds URLs (an error message, a `Debug` dump); text without a URL password comes back
/// borrowed. The stores and the examples pass every store URL they print through it.
///
/// ```
/// use tower_session_timeout::store::redact_credentials;
///
/// assert_eq!(redact_credentials("redis://:secret@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
/// assert_eq!(redact_credentials("postgres://app:pw@db/app"), "postgres://app:***@db/app");
/// assert_eq!(redact_credentials("postgres://app@db/app"), "postgres://app@db/app");
/// ```
pub fn redact_credentials(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    // Where the text not yet copied to `out` begins.
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let authority_start = search + found + 3;
        // The authority ends where the path, query or fragment begins, or at a character no
        // URL holds (the URL is embedded in other text).
        let authority_len = text[authority_start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(text.len() - authority_start);
        let authority = &text[authority_start..authority_start + authority_len];
        search = authority_start + authority_len;
        // The last '@' ends the user info: a password may hold '@' only percent-encoded, but a
        // careless one is still hidden whole.
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        let Some(colon) = authority[..at].find(':') else {
            continue;
        };
        let password_start = authority_start + colon + 1;
        let password_end = authority_start + at;
        if password_start == password_end {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..password_start]);
        out.push_str(MASK);
        copied = password_end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_credentials;

    #[test]
    fn hides_url_passwords_and_keeps_the_rest() {
        for (text, expected) in [
            ("redis://:secret@h/0", "redis://:***@h/0"),
            ("redis://:secret@h:6379", "redis://:***@h:6379"),
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u:p@w@h:5432/db?sslmode=require",
                "postgres://u:***@h:5432/db?sslmode=require",
            ),
            (
                "redis-cluster://:pw@a:7000,b:7001",
                "redis-cluster://:***@a:7000,b:7001",
            ),
            (
                "Redis(\"rediss://user:pw@a:1/0\") and postgres://x:y@z",
                "Redis(\"rediss://user:***@a:1/0\") and postgres://x:***@z",
            ),
        ] {
            assert_eq!(redact_credentials(text), expected, "{text}");
        }
    }

    #[test]
    fn leaves_text_without_passwords_borrowed() {
        for text in [
            "memory",
            "redis://127.0.0.1:6379/0",
            "postgres://postgres@127.0.0.1:5432/test",
            "sqlite:///tmp/a.db",
            "redis://:@h/0",
            "mail me at a@b:c",
            "http://h/a:b@c",
            "://",
            "",
        ] {
            assert!(
                matches!(redact_credentials(text), std::borrow::Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }
}
