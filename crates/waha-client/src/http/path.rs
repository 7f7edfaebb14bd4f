//! Building request URLs under the base URL, and checking session names before they go into a
//! path.

use std::fmt::Write as _;

use url::Url;

use crate::error::WahaError;

/// WAHA's limit on session names, in UTF-16 units (JavaScript string length).
pub(crate) const MAX_SESSION_NAME: usize = 54;

/// A path under the base URL, with its segments already percent-encoded.
pub(crate) struct RequestPath {
    encoded: String,
}

impl RequestPath {
    /// A fixed path such as `api/sessions` (trusted, ASCII, no encoding needed).
    pub(crate) fn fixed(path: &'static str) -> Self {
        Self {
            encoded: path.to_owned(),
        }
    }

    /// `prefix/{name}/suffix`, with `name` checked and percent-encoded. `suffix` may be empty.
    pub(crate) fn session(
        prefix: &'static str,
        name: &str,
        suffix: &'static str,
    ) -> Result<Self, WahaError> {
        check_session_name(name)?;
        let mut encoded = String::with_capacity(prefix.len() + name.len() + suffix.len() + 2);
        encoded.push_str(prefix);
        encoded.push('/');
        encode_segment(name, &mut encoded);
        if !suffix.is_empty() {
            encoded.push('/');
            encoded.push_str(suffix);
        }
        Ok(Self { encoded })
    }

    /// The full URL: `base` (whose path may carry a prefix, e.g. `/waha/`) joined with this path.
    pub(crate) fn url(&self, base: &Url, base_path: &str, query: Option<&str>) -> Url {
        let mut url = base.clone();
        let mut path = String::with_capacity(base_path.len() + 1 + self.encoded.len());
        path.push_str(base_path);
        path.push('/');
        path.push_str(&self.encoded);
        url.set_path(&path);
        url.set_query(query);
        url
    }
}

/// A session name the client can put into a path or a body: 1 to 54 characters, not `.` or
/// `..` (which a URL would collapse), no control characters. WAHA itself checks nothing but the
/// length; the project's own names are stricter and checked where they are made.
pub(crate) fn check_session_name(name: &str) -> Result<(), WahaError> {
    let length = name.encode_utf16().count();
    let problem = if name.is_empty() {
        Some("session name is empty".to_owned())
    } else if length > MAX_SESSION_NAME {
        Some(format!(
            "session name is {length} characters long; WAHA allows at most {MAX_SESSION_NAME}"
        ))
    } else if name == "." || name == ".." {
        Some(format!(
            "session name {name:?} cannot be used in a URL path"
        ))
    } else if name.chars().any(char::is_control) {
        Some("session name contains control characters".to_owned())
    } else {
        None
    };
    problem.map_or(Ok(()), |problem| Err(WahaError::invalid(problem)))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_segment(segment: &str, out: &mut String) {
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_under_the_base_path() {
        let base = Url::parse("http://127.0.0.1:3000/waha/").unwrap();
        let path = RequestPath::session("api/sessions", "a b/../x%", "start").unwrap();
        assert_eq!(
            path.url(&base, "/waha", None).as_str(),
            "http://127.0.0.1:3000/waha/api/sessions/a%20b%2F..%2Fx%25/start"
        );
        let root = Url::parse("http://h:3000").unwrap();
        assert_eq!(
            RequestPath::fixed("api/sessions")
                .url(&root, "", Some("all=true"))
                .as_str(),
            "http://h:3000/api/sessions?all=true"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", ".", "..", "a\nb", &"x".repeat(55)] {
            assert!(
                matches!(check_session_name(name), Err(WahaError::Invalid { .. })),
                "{name:?}"
            );
        }
        assert!(check_session_name(&"x".repeat(54)).is_ok());
        assert!(check_session_name("tenant_1-chip.2").is_ok());
    }
}
