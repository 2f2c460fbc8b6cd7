//! Reading the session cookie from requests, noticing it in responses, and clearing it.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

use crate::Timestamp;

/// The session cookie as one request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestCookie<'a> {
    /// No session cookie, or one with an empty value.
    Absent,
    /// One session id (the same value repeated counts once).
    Present(&'a str),
    /// An id longer than the configured limit: never one the layer began.
    TooLong,
    /// Bytes a cookie value may not hold, or the name repeated with different values, which
    /// would let the app and the layer read different ids.
    Malformed,
}

/// Finds the session cookie named `name` in every `Cookie` header of the request.
///
/// Works on bytes, so a cookie of another name holding non-UTF-8 bytes does not disturb the
/// session cookie.
pub(crate) fn find<'a>(headers: &'a HeaderMap, name: &'a str, max_len: usize) -> RequestCookie<'a> {
    let mut found: Option<&'a [u8]> = None;
    for header in headers.get_all(COOKIE) {
        for value in values_named(header.as_bytes(), name.as_bytes()) {
            match found {
                Some(previous) if previous != value => return RequestCookie::Malformed,
                _ => found = Some(value),
            }
        }
    }
    match found {
        None | Some(b"") => RequestCookie::Absent,
        Some(value) if value.len() > max_len => RequestCookie::TooLong,
        Some(value) if !value.iter().all(|&byte| is_cookie_octet(byte)) => RequestCookie::Malformed,
        // Cookie octets are ASCII, so this cannot fail; a failure would still be malformed.
        Some(value) => {
            std::str::from_utf8(value).map_or(RequestCookie::Malformed, RequestCookie::Present)
        }
    }
}

/// The values of every `name=value` pair in one `Cookie` header.
///
/// A pair is trimmed of ASCII whitespace, and so are its name and value. A cookie name holds
/// no `=` (the builder checks it), so a pair is the session cookie exactly when it starts with
/// the name, then optional whitespace, then `=`: that test rejects every other cookie on its
/// first bytes, which keeps this off the profile of a request.
fn values_named<'a>(header: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    header.split(|&byte| byte == b';').filter_map(move |pair| {
        let rest = pair.trim_ascii_start().strip_prefix(name)?;
        let value = rest.trim_ascii_start().strip_prefix(b"=")?;
        Some(value.trim_ascii())
    })
}

/// RFC 6265 `cookie-octet`, plus the double quotes of a quoted value, which is kept verbatim
/// because the browser sends back exactly what the app set.
fn is_cookie_octet(byte: u8) -> bool {
    COOKIE_OCTETS[usize::from(byte)]
}

/// [`is_cookie_octet`] as a table, one lookup per byte of the session id.
const COOKIE_OCTETS: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] =
            matches!(byte, 0x21 | 0x22 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        byte += 1;
    }
    table
};

/// Removes every session cookie from the request's `Cookie` headers, keeping the others.
pub(crate) fn remove(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<Vec<u8>> = headers
        .get_all(COOKIE)
        .iter()
        .map(|header| {
            let pairs = header
                .as_bytes()
                .split(|&byte| byte == b';')
                .map(<[u8]>::trim_ascii)
                .filter(|pair| !pair.is_empty() && !is_named(pair, name.as_bytes()));
            let mut joined = Vec::with_capacity(header.len());
            for pair in pairs {
                if !joined.is_empty() {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(pair);
            }
            joined
        })
        .collect();
    headers.remove(COOKIE);
    for value in kept.into_iter().filter(|value| !value.is_empty()) {
        // The bytes came from a valid header value and only lost some pairs.
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.append(COOKIE, value);
        }
    }
}

fn is_named(pair: &[u8], name: &[u8]) -> bool {
    let key = pair.split(|&byte| byte == b'=').next().unwrap_or_default();
    key.trim_ascii() == name
}

/// What a response did to the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResponseCookie {
    /// It did not set the session cookie.
    Untouched,
    /// It set the session cookie to this value.
    Set(String),
    /// It cleared the session cookie (`Max-Age=0`, an `Expires` in the past, or no value).
    Cleared,
}

/// Reads what the response's `Set-Cookie` headers do to the cookie named `name`; the last
/// one wins, as in a browser.
/// `now` is asked only for a session cookie with an `Expires`, so most responses never read
/// the clock.
pub(crate) fn observe(
    headers: &HeaderMap,
    name: &str,
    now: impl Fn() -> Timestamp,
) -> ResponseCookie {
    let mut outcome = ResponseCookie::Untouched;
    for header in headers.get_all(SET_COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        let Ok(cookie) = cookie::Cookie::parse(text) else {
            continue;
        };
        if cookie.name() != name {
            continue;
        }
        outcome = if clears(&cookie, &now) {
            ResponseCookie::Cleared
        } else {
            ResponseCookie::Set(cookie.value().to_owned())
        };
    }
    outcome
}

fn clears(cookie: &cookie::Cookie<'_>, now: impl Fn() -> Timestamp) -> bool {
    if cookie.value().is_empty() {
        return true;
    }
    if let Some(max_age) = cookie.max_age() {
        return max_age <= time::Duration::ZERO;
    }
    match cookie.expires_datetime() {
        Some(expires) => {
            let now_millis = i128::from(now().as_unix_millis());
            expires.unix_timestamp_nanos() / 1_000_000 <= now_millis
        }
        None => false,
    }
}

/// Where the session cookie lives, as needed to clear it.
#[derive(Debug, Clone)]
pub(crate) struct CookieSettings {
    pub(crate) name: String,
    /// The precomputed `Set-Cookie` value that clears the cookie.
    pub(crate) clear: HeaderValue,
    /// Also clears a cookie of the same name at `Path=/` with no `Domain`, when that is not
    /// where the configured one lives: a stray one there (another path, an old host-only
    /// cookie) is what makes a browser send the name twice.
    pub(crate) clear_elsewhere: Option<HeaderValue>,
}

impl CookieSettings {
    pub(crate) fn new(name: String, path: &str, domain: Option<&str>) -> Self {
        let elsewhere = path != "/" || domain.is_some();
        CookieSettings {
            clear: clearing(&name, path, domain),
            clear_elsewhere: elsewhere.then(|| clearing(&name, "/", None)),
            name,
        }
    }
}

/// The `Set-Cookie` value that clears cookie `name` at `path` and `domain`.
fn clearing(name: &str, path: &str, domain: Option<&str>) -> HeaderValue {
    let mut clear = format!("{name}=; Path={path}");
    if let Some(domain) = domain {
        clear.push_str("; Domain=");
        clear.push_str(domain);
    }
    clear.push_str("; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax");
    // Browsers drop a prefixed cookie's Set-Cookie without Secure, clearing included.
    if name.starts_with("__Secure-") || name.starts_with("__Host-") {
        clear.push_str("; Secure");
    }
    // The builder validated every part, so the value is a valid header.
    HeaderValue::try_from(clear).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether `name` is an RFC 6265 cookie name (an RFC 9110 token).
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Whether `text` may stand as a cookie attribute value (`Path`, `Domain`).
pub(crate) fn is_valid_attribute(text: &str) -> bool {
    text.bytes()
        .all(|byte| (0x21..=0x7E).contains(&byte) && byte != b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(COOKIE, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn finds_the_named_cookie_among_others() {
        let map = headers(&[b"a=1; id=abc; b=2"]);
        assert_eq!(find(&map, "id", 64), RequestCookie::Present("abc"));
        assert_eq!(find(&map, "sid", 64), RequestCookie::Absent);
    }

    #[test]
    fn repeated_names_agree_or_are_malformed() {
        assert_eq!(
            find(&headers(&[b"id=x; id=x"]), "id", 64),
            RequestCookie::Present("x")
        );
        assert_eq!(
            find(&headers(&[b"id=x", b"id=y"]), "id", 64),
            RequestCookie::Malformed
        );
    }

    #[test]
    fn other_cookies_with_odd_bytes_do_not_matter() {
        let map = headers(&[b"junk=\xff\xfe; id=abc"]);
        assert_eq!(find(&map, "id", 64), RequestCookie::Present("abc"));
        assert_eq!(
            find(&headers(&[b"id=\xffabc"]), "id", 64),
            RequestCookie::Malformed
        );
    }

    #[test]
    fn empty_and_long_values() {
        assert_eq!(find(&headers(&[b"id="]), "id", 64), RequestCookie::Absent);
        assert_eq!(
            find(&headers(&[b"id=abcdef"]), "id", 5),
            RequestCookie::TooLong
        );
        assert_eq!(
            find(&headers(&[b"id=\"abc\""]), "id", 64),
            RequestCookie::Present("\"abc\"")
        );
    }

    #[test]
    fn remove_keeps_other_cookies() {
        let mut map = headers(&[b"a=1; id=abc; b=2", b"id=abc"]);
        remove(&mut map, "id");
        let left: Vec<_> = map.get_all(COOKIE).iter().collect();
        assert_eq!(left, [HeaderValue::from_static("a=1; b=2")]);
    }

    #[test]
    fn observes_set_and_clear() {
        let now = Timestamp::from_unix_millis(1_767_225_600_000);
        let observe_one = |value: &'static str| {
            let mut map = HeaderMap::new();
            map.append(SET_COOKIE, HeaderValue::from_static(value));
            observe(&map, "id", || now)
        };
        assert_eq!(
            observe_one("id=new; Path=/; HttpOnly"),
            ResponseCookie::Set("new".into())
        );
        assert_eq!(observe_one("id=x; Max-Age=0"), ResponseCookie::Cleared);
        assert_eq!(observe_one("id=; Path=/"), ResponseCookie::Cleared);
        assert_eq!(
            observe_one("id=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
            ResponseCookie::Cleared
        );
        assert_eq!(
            observe_one("id=x; Expires=Fri, 01 Jan 2100 00:00:00 GMT"),
            ResponseCookie::Set("x".into())
        );
        assert_eq!(observe_one("other=x"), ResponseCookie::Untouched);
    }

    #[test]
    fn clearing_cookie_names_path_and_domain() {
        let settings = CookieSettings::new("id".into(), "/app", Some("example.com"));
        assert_eq!(
            settings.clear,
            "id=; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
        );
    }
}
