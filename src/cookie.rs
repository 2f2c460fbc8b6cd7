//! Reading the session cookie from requests, noticing it in responses, and clearing it.
//!
//! The layer must check the very id the app will use. Apps read cookies with the `cookie`
//! crate (directly, or through tower-cookies, axum-extra's `CookieJar`, tower-sessions and
//! axum-login), which splits a `Cookie` header on `;`, trims Unicode whitespace from names and
//! values, and with `parse_encoded` percent-decodes both. So the layer takes as the session
//! cookie every pair whose name any of those readings turns into the session cookie's name
//! (`id`, ` id`, `%69d`, `\u{a0}id`), requires every such pair to carry the same value, and
//! accepts only values that every reading leaves unchanged: cookie octets without `%`. Any
//! request where two readers could disagree is refused.

use std::borrow::Cow;
use std::ops::Range;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::Timestamp;

/// The session cookie as one request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestCookie<'a> {
    /// No session cookie, or one with an empty value.
    Absent,
    /// One session id: every spelling of the name that any cookie reader would take carries
    /// this value.
    Present(FoundId<'a>),
    /// An id shorter or longer than the configured bounds: never one the layer began.
    Untracked,
    /// A value some reader would read differently (bytes a cookie may not hold, a percent
    /// escape), the name carried twice with different values, or the name hidden where a
    /// lenient reader would find it: the app and the layer could read different ids.
    Malformed,
}

/// Where a request carries its session id: the `Cookie` header holding it, and its place in
/// that header, so the handler can be given the id without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundId<'a> {
    pub(crate) header: &'a HeaderValue,
    pub(crate) range: Range<usize>,
}

impl<'a> FoundId<'a> {
    /// The id's bytes: session-id bytes only, so ASCII.
    #[inline]
    pub(crate) fn bytes(&self) -> &'a [u8] {
        &self.header.as_bytes()[self.range.clone()]
    }
}

/// How the layer reads one `name=value` pair of a `Cookie` header.
#[derive(Debug, PartialEq, Eq)]
enum Pair<'a> {
    /// Not the session cookie to any reader.
    Other,
    /// The session cookie, with its value trimmed of ASCII whitespace.
    Session(&'a [u8]),
    /// Another cookie whose value holds `, <name>=`: a reader that also splits on commas
    /// (the obsolete RFC 2965 syntax) would find a session cookie there.
    Hidden,
}

/// Finds the session cookie named `name` in every `Cookie` header of the request.
///
/// Works on bytes, so a cookie of another name holding non-UTF-8 bytes does not disturb the
/// session cookie. A header holding only plain ASCII without `%` or `,` (what browsers send
/// for ordinary cookies) takes the fast path: a pair is the session cookie exactly when it
/// starts with the name, then optional whitespace, then `=`, which rejects every other cookie
/// on its first bytes.
pub(crate) fn find<'a>(headers: &'a HeaderMap, name: &str, bounds: IdBounds) -> RequestCookie<'a> {
    // The header the id was first found in, the id, and whether that header is plain.
    let mut found: Option<(&'a HeaderValue, &'a [u8], bool)> = None;
    let readable = all_values(headers, &COOKIE, |header| {
        let bytes = header.as_bytes();
        let plain = is_plain(bytes);
        pairs(bytes).all(|pair| match classify(pair, name.as_bytes(), plain) {
            Pair::Other => true,
            Pair::Hidden => false,
            Pair::Session(value) => match found {
                Some((_, previous, _)) => previous == value,
                None => {
                    found = Some((header, value, plain));
                    true
                }
            },
        })
    });
    if !readable {
        return RequestCookie::Malformed;
    }
    match found {
        None | Some((_, b"", _)) => RequestCookie::Absent,
        Some((_, value, plain)) if !is_session_id_in(value, plain) => RequestCookie::Malformed,
        Some((_, value, _)) if !bounds.admits(value.len()) => RequestCookie::Untracked,
        Some((header, value, _)) => {
            // `value` is a slice of `header`'s bytes: its place is the distance between them.
            // Should it ever not be one, the id could not be placed: refused, not misread.
            let offset = (value.as_ptr() as usize).checked_sub(header.as_bytes().as_ptr() as usize);
            match offset {
                Some(start) if start + value.len() <= header.len() => {
                    RequestCookie::Present(FoundId {
                        header,
                        range: start..start + value.len(),
                    })
                }
                _ => RequestCookie::Malformed,
            }
        }
    }
}

/// Up to this many header values, a header is looked for by comparing names one by one:
/// hashing its name, as `HeaderMap::get_all` does, costs about as much as comparing it with
/// eight others, and most responses and many requests carry fewer.
const SCANNED: usize = 8;

/// Whether `each` answers `true` for every value of header `name`, asked in the order
/// `HeaderMap::get_all` gives them; stops at the first `false`.
fn all_values<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    mut each: impl FnMut(&'a HeaderValue) -> bool,
) -> bool {
    if headers.len() <= SCANNED {
        // `iter` gives each name's values together, in the order `get_all` gives them.
        headers
            .iter()
            .filter(|(key, _)| *key == name)
            .all(|(_, value)| each(value))
    } else {
        headers.get_all(name).iter().all(each)
    }
}

/// The lengths of session id the layer tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdBounds {
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl IdBounds {
    pub(crate) fn admits(self, len: usize) -> bool {
        (self.min..=self.max).contains(&len)
    }
}

/// Whether a header has nothing a lenient reader could read differently: no percent
/// escapes, no bytes beyond ASCII (where Unicode whitespace lives), no commas.
fn is_plain(header: &[u8]) -> bool {
    let mut words = header.chunks_exact(8);
    for word in &mut words {
        let word = word_of(word);
        if (word | bytes_equal(word, b'%') | bytes_equal(word, b',')) & HIGH_BITS != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&byte| byte.is_ascii() && byte != b'%' && byte != b',')
}

// The header scans read eight bytes at a time: they run on every request with a session
// cookie (BENCHMARKS.md, section 1, counts what they save). Each helper sets the
// high bit of some byte exactly when some byte of the word matches (which byte, it does not
// say), so their results combine with `|` and one test of `HIGH_BITS`.
const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

fn word_of(bytes: &[u8]) -> u64 {
    // `chunks_exact(8)` gives eight bytes; anything else reads as non-ASCII, so as refused.
    u64::from_le_bytes(bytes.try_into().unwrap_or([0xFF; 8]))
}

/// Some high bit set when one of the word's bytes is `byte`.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ (LOW_BITS * u64::from(byte)), 1)
}

/// Some high bit set when one of the word's bytes is below `bound` (at most 0x80).
fn bytes_below(word: u64, bound: u8) -> u64 {
    word.wrapping_sub(LOW_BITS * u64::from(bound)) & !word & HIGH_BITS
}

/// Some high bit set when one of the word's bytes is DEL (0x7F) or beyond ASCII.
fn bytes_from_del(word: u64) -> u64 {
    // 0x7F + 1 sets the high bit; a byte that has it already is caught by `| word`.
    (word.wrapping_add(LOW_BITS) | word) & HIGH_BITS
}

/// The `;`-separated pieces of a header, as `header.split(|&byte| byte == b';')` gives them,
/// found eight bytes at a time.
fn pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let bytes = rest?;
        match position_of_semicolon(bytes) {
            Some(end) => {
                rest = bytes.get(end + 1..);
                bytes.get(..end)
            }
            None => rest.take(),
        }
    })
}

fn position_of_semicolon(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut start = 0;
    for word in &mut words {
        let found = bytes_equal(word_of(word), b';');
        if found != 0 {
            // The lowest flagged byte is a `;`: a borrow flags only bytes above a match.
            return Some(start + found.trailing_zeros() as usize / 8);
        }
        start += 8;
    }
    let at = words.remainder().iter().position(|&byte| byte == b';')?;
    Some(start + at)
}

// Always: it runs for every pair of every `Cookie` header, its plain case is a few
// comparisons, and with `#[inline]` alone the compiler kept the call.
#[inline(always)]
fn classify<'a>(pair: &'a [u8], name: &[u8], plain: bool) -> Pair<'a> {
    if plain {
        let session = strip_name(pair.trim_ascii_start(), name)
            .and_then(|rest| rest.trim_ascii_start().strip_prefix(b"="));
        return session.map_or(Pair::Other, |value| Pair::Session(value.trim_ascii()));
    }
    classify_lenient(pair, name)
}

/// [`classify`] for a pair of a header that is not plain.
fn classify_lenient<'a>(pair: &'a [u8], name: &[u8]) -> Pair<'a> {
    // A pair without `=` is no cookie to any reader (the cookie crate: `MissingPair`).
    let Some(equals) = pair.iter().position(|&byte| byte == b'=') else {
        return Pair::Other;
    };
    if reads_as(&pair[..equals], name) {
        return Pair::Session(pair[equals + 1..].trim_ascii());
    }
    let hidden = pair.split(|&byte| byte == b',').skip(1).any(|piece| {
        piece
            .iter()
            .position(|&byte| byte == b'=')
            .is_some_and(|equals| reads_as(&piece[..equals], name))
    });
    if hidden {
        Pair::Hidden
    } else {
        Pair::Other
    }
}

/// `pair.strip_prefix(name)`, compared byte by byte: a cookie name is a few bytes, fewer than
/// a call to `memcmp` costs.
fn strip_name<'a>(pair: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let head = pair.get(..name.len())?;
    head.iter()
        .zip(name)
        .all(|(byte, expected)| byte == expected)
        .then(|| &pair[name.len()..])
}

/// Whether some reader takes the cookie name `raw` as `name`: as it is, trimmed of Unicode
/// whitespace (the cookie crate's `parse`), then percent-decoded (`parse_encoded`), then
/// trimmed again (a reader that decodes first).
fn reads_as(raw: &[u8], name: &[u8]) -> bool {
    if raw.trim_ascii() == name {
        return true;
    }
    let text = String::from_utf8_lossy(raw);
    let decoded = percent_decode(text.trim().as_bytes());
    String::from_utf8_lossy(&decoded).trim().as_bytes() == name
}

/// Decodes `%XX` escapes; anything else, a lone `%` included, stays as it is.
fn percent_decode(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&first, tail)) = rest.split_first() {
        if let [b'%', high, low, ..] = rest {
            if let (Some(high), Some(low)) = (hex(*high), hex(*low)) {
                // Two hex digits make at most 0xFF.
                out.push((high * 16 + low) as u8);
                rest = &rest[3..];
                continue;
            }
        }
        out.push(first);
        rest = tail;
    }
    Cow::Owned(out)
}

/// Whether `value` may be a session id: only bytes that every cookie reader takes as they
/// are. They are RFC 6265's `cookie-octet`, plus the double quotes of a quoted value (kept
/// verbatim, as the cookie crate's `value()` keeps them), minus `%`, which `parse_encoded`
/// decodes and `parse` does not.
pub(crate) fn is_session_id(value: &[u8]) -> bool {
    // Some high bit set when a byte is outside the alphabet: 0x21..=0x7E but for these four.
    let outside = |word: u64| {
        bytes_below(word, 0x21)
            | bytes_from_del(word)
            | bytes_equal(word, b'%')
            | bytes_equal(word, b',')
            | bytes_equal(word, b';')
            | bytes_equal(word, b'\\')
    };
    words_pass(value, outside)
}

/// [`is_session_id`] for a value [`find`] took from a pair of a header it read: `plain` when
/// [`is_plain`] held for that header, which leaves no byte beyond ASCII, no `%` and no `,`
/// to look for, and a pair holds no `;`.
fn is_session_id_in(value: &[u8], plain: bool) -> bool {
    if !plain {
        return is_session_id(value);
    }
    let outside =
        |word: u64| bytes_below(word, 0x21) | bytes_from_del(word) | bytes_equal(word, b'\\');
    let answer = words_pass(value, outside);
    debug_assert_eq!(answer, is_session_id(value), "{value:?}");
    answer
}

/// Whether `value` is a session id by `outside`, a word test that flags exactly the words with
/// a byte outside the alphabet (a value shorter than a word is looked at byte by byte).
#[inline(always)]
fn words_pass(value: &[u8], outside: impl Fn(u64) -> u64) -> bool {
    let Some(last) = value.len().checked_sub(8) else {
        return value.iter().all(|&byte| is_session_id_byte(byte));
    };
    let mut words = value.chunks_exact(8);
    if words.any(|word| outside(word_of(word)) != 0) {
        return false;
    }
    // The bytes after the last whole word, as the last eight bytes: the test is per byte, so
    // reading some twice changes nothing.
    words.remainder().is_empty() || outside(word_of(&value[last..])) == 0
}

/// [`is_session_id`] for one byte.
fn is_session_id_byte(byte: u8) -> bool {
    SESSION_ID_BYTES[usize::from(byte)]
}

/// [`is_session_id_byte`] as a table, one lookup per byte of the session id's last word.
const SESSION_ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = matches!(byte, 0x21 | 0x22 | 0x23 | 0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        byte += 1;
    }
    table
};

/// Removes the session cookie from the request's `Cookie` headers in every spelling a reader
/// could take (and any pair hiding it), keeping the other cookies.
pub(crate) fn remove(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<Vec<u8>> = headers
        .get_all(COOKIE)
        .iter()
        .map(|header| {
            let pairs = header
                .as_bytes()
                .split(|&byte| byte == b';')
                .map(<[u8]>::trim_ascii)
                .filter(|pair| {
                    !pair.is_empty() && classify(pair, name.as_bytes(), false) == Pair::Other
                });
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
#[inline]
pub(crate) fn observe(
    headers: &HeaderMap,
    name: &str,
    now: impl Fn() -> Timestamp,
) -> ResponseCookie {
    // Most responses set no cookie: a look at a few names settles it (inlined, without a
    // call), as it costs less than going through their values.
    if headers.keys_len() <= SCANNED && !headers.keys().any(|key| key == SET_COOKIE) {
        return ResponseCookie::Untouched;
    }
    observe_values(headers, name, now)
}

fn observe_values(headers: &HeaderMap, name: &str, now: impl Fn() -> Timestamp) -> ResponseCookie {
    let mut outcome = ResponseCookie::Untouched;
    all_values(headers, &SET_COOKIE, |header| {
        let Ok(text) = header.to_str() else {
            return true;
        };
        let Ok(cookie) = cookie::Cookie::parse(text) else {
            return true;
        };
        // The same spellings as in requests: a browser sends back the name as set.
        if reads_as(cookie.name().as_bytes(), name.as_bytes()) {
            outcome = if clears(&cookie, &now) {
                ResponseCookie::Cleared
            } else {
                ResponseCookie::Set(cookie.value().to_owned())
            };
        }
        true
    });
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

    fn bounds(min: usize, max: usize) -> IdBounds {
        IdBounds { min, max }
    }

    /// What [`find`] read, with a found id as text.
    #[derive(Debug, PartialEq, Eq)]
    enum Read {
        Absent,
        Present(String),
        Untracked,
        Malformed,
    }

    fn read(headers: &HeaderMap, name: &str, bounds: IdBounds) -> Read {
        match find(headers, name, bounds) {
            RequestCookie::Absent => Read::Absent,
            RequestCookie::Present(found) => {
                Read::Present(String::from_utf8(found.bytes().to_vec()).unwrap())
            }
            RequestCookie::Untracked => Read::Untracked,
            RequestCookie::Malformed => Read::Malformed,
        }
    }

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
        assert_eq!(read(&map, "id", bounds(1, 64)), Read::Present("abc".into()));
        assert_eq!(read(&map, "sid", bounds(1, 64)), Read::Absent);
    }

    #[test]
    fn repeated_names_agree_or_are_malformed() {
        assert_eq!(
            read(&headers(&[b"id=x; id=x"]), "id", bounds(1, 64)),
            Read::Present("x".into())
        );
        assert_eq!(
            read(&headers(&[b"id=x", b"id=y"]), "id", bounds(1, 64)),
            Read::Malformed
        );
    }

    #[test]
    fn other_cookies_with_odd_bytes_do_not_matter() {
        let map = headers(&[b"junk=\xff\xfe; id=abc"]);
        assert_eq!(read(&map, "id", bounds(1, 64)), Read::Present("abc".into()));
        assert_eq!(
            read(&headers(&[b"id=\xffabc"]), "id", bounds(1, 64)),
            Read::Malformed
        );
    }

    #[test]
    fn empty_and_long_values() {
        assert_eq!(read(&headers(&[b"id="]), "id", bounds(1, 64)), Read::Absent);
        assert_eq!(
            read(&headers(&[b"id=abcdef"]), "id", bounds(1, 5)),
            Read::Untracked
        );
        assert_eq!(
            read(&headers(&[b"id=\"abc\""]), "id", bounds(1, 64)),
            Read::Present("\"abc\"".into())
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
    fn every_byte_outside_the_id_alphabet_is_malformed() {
        // `;` is the pair separator, not part of a value.
        for byte in (0x20..=0xFFu8).filter(|&byte| byte != b';') {
            let header = [b"id=a".as_slice(), &[byte], b"b"].concat();
            let Ok(value) = HeaderValue::from_bytes(&header) else {
                continue;
            };
            let map = [(COOKIE, value)].into_iter().collect();
            let found = read(&map, "id", bounds(1, 64));
            let allowed = byte.is_ascii_graphic() && !b"%,;\\".contains(&byte);
            if allowed {
                let id = format!("a{}b", char::from(byte));
                assert_eq!(found, Read::Present(id), "byte {byte:#x}");
            } else {
                assert_eq!(found, Read::Malformed, "byte {byte:#x}");
            }
        }
    }

    /// The word-at-a-time scans agree with the byte-at-a-time definitions for every byte at
    /// every place in a word and in the tail, so no byte slips through a word's edge.
    #[test]
    fn word_scans_agree_with_byte_scans() {
        for len in [7, 8, 9, 16, 17, 23] {
            for place in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[place] = byte;
                    let plain = bytes
                        .iter()
                        .all(|&b| b.is_ascii() && b != b'%' && b != b',');
                    assert_eq!(is_plain(&bytes), plain, "{byte:#x} at {place} of {len}");
                    let id = bytes.iter().all(|&b| is_session_id_byte(b));
                    assert_eq!(is_session_id(&bytes), id, "{byte:#x} at {place} of {len}");
                }
            }
        }
    }

    /// Neighbouring bytes borrow and carry into each other in the word arithmetic: every pair
    /// of bytes across a word's edge still reads as the byte-at-a-time definitions read it.
    #[test]
    fn word_scans_agree_on_every_pair_of_bytes_across_a_word_edge() {
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                let mut bytes = [b'a'; 16];
                bytes[7] = first;
                bytes[8] = second;
                let pair = [first, second];
                let plain = pair.iter().all(|&b| b.is_ascii() && b != b'%' && b != b',');
                assert_eq!(is_plain(&bytes), plain, "{first:#x} {second:#x}");
                let id = pair.iter().all(|&b| is_session_id_byte(b));
                assert_eq!(is_session_id(&bytes), id, "{first:#x} {second:#x}");
                // Within one word too.
                bytes[8] = b'a';
                bytes[6] = second;
                let plain = pair.iter().all(|&b| b.is_ascii() && b != b'%' && b != b',');
                assert_eq!(
                    is_plain(&bytes),
                    plain,
                    "{first:#x} {second:#x} in one word"
                );
                assert_eq!(
                    is_session_id(&bytes),
                    id,
                    "{first:#x} {second:#x} in one word"
                );
            }
        }
    }

    /// The plain-header shortcut of the id check answers as the full check on every value a
    /// plain header can hold: each such byte at every place of every length up to three words.
    #[test]
    fn plain_id_check_matches_the_full_one() {
        for len in 0..=24 {
            for place in 0..len {
                for byte in (0..0x80u8).filter(|byte| !b"%,;".contains(byte)) {
                    let mut value = vec![b'a'; len];
                    value[place] = byte;
                    assert!(is_plain(&value));
                    assert_eq!(
                        is_session_id_in(&value, true),
                        is_session_id(&value),
                        "{value:?}"
                    );
                }
            }
        }
    }

    /// The word-at-a-time split gives the pieces `split` gives: `;` and any other byte at every
    /// place of every length up to three words, pairs of `;` at every two places, and the
    /// empty header.
    #[test]
    fn pairs_split_as_slice_split_does() {
        let split = |bytes: &[u8]| -> Vec<Vec<u8>> {
            bytes.split(|&b| b == b';').map(<[u8]>::to_vec).collect()
        };
        let ours = |bytes: &[u8]| -> Vec<Vec<u8>> { pairs(bytes).map(<[u8]>::to_vec).collect() };
        assert_eq!(ours(b""), vec![Vec::<u8>::new()]);
        for len in 1..=24 {
            for first in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[first] = byte;
                    assert_eq!(ours(&bytes), split(&bytes), "{byte:#x} at {first} of {len}");
                }
                for second in first..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[first] = b';';
                    bytes[second] = b';';
                    assert_eq!(
                        ours(&bytes),
                        split(&bytes),
                        "; at {first} and {second} of {len}"
                    );
                }
            }
        }
    }

    /// hyper slices every header value out of one read buffer, so neighbouring values sit
    /// back to back in memory: the id is placed in its own header, never a neighbour.
    #[test]
    fn the_id_is_placed_in_its_own_header_among_slices_of_one_buffer() {
        let (one, two) = ("a=1; b=2", "id=second-id-000000");
        let buffer = bytes::Bytes::from(format!("{one}{two}"));
        let mut map = HeaderMap::new();
        for range in [0..one.len(), one.len()..one.len() + two.len()] {
            let value = HeaderValue::from_maybe_shared(buffer.slice(range)).unwrap();
            map.append(COOKIE, value);
        }
        let RequestCookie::Present(found) = find(&map, "id", bounds(1, 64)) else {
            panic!("no id found");
        };
        assert_eq!(found.header.as_bytes(), two.as_bytes());
        assert_eq!(found.range, 3..two.len());
        assert_eq!(found.bytes(), b"second-id-000000");
    }

    #[test]
    fn length_bounds_are_inclusive() {
        let untracked = |len: usize| {
            let map = headers(&[format!("id={}", "x".repeat(len)).as_bytes()]);
            read(&map, "id", bounds(4, 8)) == Read::Untracked
        };
        assert!(untracked(3));
        assert!(!untracked(4));
        assert!(!untracked(8));
        assert!(untracked(9));
    }

    #[test]
    fn names_as_lenient_readers_take_them() {
        for spelling in [
            "id",
            " id",
            "id\t",
            "%69d",
            "i%64",
            "%69%64",
            "%20id",
            "\u{a0}id",
            "\u{3000}id ",
        ] {
            assert!(reads_as(spelling.as_bytes(), b"id"), "{spelling:?}");
        }
        for other in ["idx", "i d", "ID", "%2569d", "%69d%ff", "", "%"] {
            assert!(!reads_as(other.as_bytes(), b"id"), "{other:?}");
        }
    }

    #[test]
    fn percent_decoding_takes_only_whole_escapes() {
        assert_eq!(&*percent_decode(b"%41%4a%"), b"AJ%");
        assert_eq!(&*percent_decode(b"%4"), b"%4");
        assert_eq!(&*percent_decode(b"%zz%20"), b"%zz ");
        assert!(matches!(percent_decode(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn remove_takes_every_spelling_and_hidden_pair() {
        let mut map = headers(&[b"a=1; %69d=x; b=2, id=y; c=3", b"\xc2\xa0id=x"]);
        remove(&mut map, "id");
        let left: Vec<_> = map.get_all(COOKIE).iter().collect();
        assert_eq!(left, [HeaderValue::from_static("a=1; c=3")]);
    }

    #[test]
    fn cleared_by_max_age_or_by_a_past_expires_each_alone() {
        let now = Timestamp::from_unix_millis(1_767_225_600_000); // 2026-01-01
        let observe_one = |value: &'static str| {
            let mut map = HeaderMap::new();
            map.append(SET_COOKIE, HeaderValue::from_static(value));
            observe(&map, "id", || now)
        };
        // An app's sign-out a day back, with no Max-Age.
        assert_eq!(
            observe_one("id=x; Expires=Wed, 31 Dec 2025 00:00:00 GMT"),
            ResponseCookie::Cleared
        );
        assert_eq!(
            observe_one("id=x; Expires=Fri, 02 Jan 2026 00:00:00 GMT"),
            ResponseCookie::Set("x".into())
        );
        // Max-Age wins over Expires, either way.
        assert_eq!(
            observe_one("id=x; Max-Age=0; Expires=Fri, 02 Jan 2026 00:00:00 GMT"),
            ResponseCookie::Cleared
        );
        assert_eq!(
            observe_one("id=x; Max-Age=60; Expires=Wed, 31 Dec 2025 00:00:00 GMT"),
            ResponseCookie::Set("x".into())
        );
        assert_eq!(observe_one("%69d=x; Max-Age=0"), ResponseCookie::Cleared);
    }

    #[test]
    fn clearing_a_prefixed_cookie_is_secure() {
        for name in ["__Secure-id", "__Host-id"] {
            let settings = CookieSettings::new(name.into(), "/", None);
            let clear = settings.clear.to_str().unwrap();
            assert!(clear.ends_with("; Secure"), "{clear}");
        }
        let plain = CookieSettings::new("id".into(), "/", None);
        assert!(!plain.clear.to_str().unwrap().contains("Secure"));
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
