//! What a request whose session is not active gets, decided in one place for the service
//! (which finds a cookie it cannot use) and the response future (which hears from the store).

use http::header::SET_COOKIE;
use http::{Request, Response};

use bytes::Bytes;

use crate::config::Config;
use crate::cookie::{self, ResponseCookie};
use crate::expired::{self, ExpiredSession};
use crate::metrics::{self, Decision};
use crate::routes::Route;
use crate::{answer, ExpiryReason};

/// What happens to a request whose session is not active: `reason` is why, or `None` for a
/// session cookie that cannot be read.
///
/// On an exempt route the stale cookie is removed from the request and `None` is returned:
/// the request goes on, and its response will clear the cookie. Elsewhere the answer is
/// returned: 440 for an expired or unknown session, 400 for a malformed cookie.
pub(crate) fn inactive<St, B>(
    config: &Config<St>,
    route: Route,
    reason: Option<ExpiryReason>,
    request: &mut Request<B>,
) -> Option<Response<Bytes>> {
    if route == Route::Exempt {
        metrics::request(Decision::Exempt);
        tracing::debug!(?reason, "stale session cookie on an exempt route; removed");
        cookie::remove(request.headers_mut(), &config.cookie.name);
        return None;
    }
    metrics::request(reason.map_or(Decision::Malformed, Decision::Expired));
    let mut answer = match reason {
        Some(reason) => {
            let prefers_json = route == Route::Status || expired::prefers_json(request.headers());
            let expiry = ExpiredSession::new(reason, prefers_json, config.login_url.as_deref());
            match &config.responder {
                Some(respond) => respond(&expiry),
                None => expiry.default_response(),
            }
        }
        None => {
            tracing::debug!("malformed session cookie; answering 400");
            answer::malformed_cookie()
        }
    };
    let now = || config.now();
    if cookie::observe(answer.headers(), &config.cookie.name, now) == ResponseCookie::Untouched {
        answer
            .headers_mut()
            .append(SET_COOKIE, config.cookie.clear.clone());
    }
    // Two different ids under one name usually means a second cookie at another path or
    // domain; clearing only the configured one would leave the browser stuck on 400.
    if let (None, Some(elsewhere)) = (reason, &config.cookie.clear_elsewhere) {
        answer.headers_mut().append(SET_COOKIE, elsewhere.clone());
    }
    expired::finish(&mut answer);
    Some(answer)
}
