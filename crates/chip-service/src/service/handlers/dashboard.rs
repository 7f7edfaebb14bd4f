//! The dashboard: one HTML page, its script and its style sheet, embedded in the binary
//! (`crates/chip-service/assets/`) and served from the service's own origin. No build step,
//! nothing loaded from off the machine.
//!
//! The page asks for the tenant's API token (a password field; kept in memory, or in the
//! tab's `sessionStorage` when the user asks, never in a URL) and sends it only in the
//! `Authorization` header of its own requests to the API. It reads the event stream with
//! `fetch()` and a `ReadableStream` (an `EventSource` cannot send that header) and resumes it
//! with `Last-Event-ID` after a drop.
//!
//! Every asset is answered with `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//! no-referrer` and `Cache-Control: no-cache`; the page also with [`CONTENT_SECURITY_POLICY`]
//! (scripts, styles, requests and images from the same origin only, plus the `blob:` URLs
//! the page makes of the QR images) and `X-Frame-Options: DENY`. The assets carry no secret:
//! what the page shows comes from the API, which never answers a webhook HMAC key or a
//! container API key.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY as CSP_HEADER, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};

/// The page.
pub(crate) const PAGE: &str = include_str!("../../../assets/dashboard.html");
/// The page's script (`GET /dashboard/app.js`).
pub(crate) const SCRIPT: &str = include_str!("../../../assets/dashboard.js");
/// The page's style sheet (`GET /dashboard/app.css`).
pub(crate) const STYLE: &str = include_str!("../../../assets/dashboard.css");

/// The page's `Content-Security-Policy`: everything from the page's own origin only; images
/// also from the `blob:` URLs the script makes of the QR PNGs (and `data:`); no inline
/// script or style, no plugins, no framing, no form submission, no `<base>`.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; font-src 'none'; \
     object-src 'none'; frame-src 'none'; worker-src 'none'; manifest-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /dashboard`: the page, with its Content-Security-Policy.
pub(crate) async fn page() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CSP_HEADER, CONTENT_SECURITY_POLICY),
            (X_FRAME_OPTIONS, "DENY"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /dashboard/app.js`: the page's script.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/app.css`: the page's style sheet.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_load_nothing_from_off_the_machine() {
        for (name, text) in [("page", PAGE), ("script", SCRIPT), ("style", STYLE)] {
            for needle in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(
                    !text.contains(needle),
                    "the dashboard's {name} contains {needle:?}"
                );
            }
        }
        assert!(PAGE.contains("src=\"/dashboard/app.js\""));
        assert!(PAGE.contains("href=\"/dashboard/app.css\""));
        assert!(!PAGE.contains("<script>"), "no inline script");
        assert!(!PAGE.contains("<style"), "no inline style");
        assert!(!PAGE.contains(" style=\""), "no style attributes");
    }

    #[test]
    fn the_policy_keeps_the_page_on_its_own_origin() {
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "img-src 'self' blob: data:",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(axum::http::HeaderValue::from_str(CONTENT_SECURITY_POLICY).is_ok());
    }

    #[test]
    fn the_token_never_goes_into_a_url() {
        // The token field has no `name` (a form without script would not submit it), the
        // script sends it in the Authorization header only.
        assert!(PAGE.contains("id=\"token\""));
        assert!(PAGE.contains("type=\"password\""));
        assert!(!PAGE.contains("name=\"token\""));
        assert!(SCRIPT.contains("Authorization"));
        assert!(!SCRIPT.contains("?token="));
        assert!(!SCRIPT.contains("&token="));
        assert!(!SCRIPT.contains("localStorage"), "sessionStorage at most");
        assert!(
            !SCRIPT.contains("EventSource("),
            "streams are read with fetch()"
        );
    }
}
