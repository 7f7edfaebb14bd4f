//! Redaction of server text before it is kept in an error.
//!
//! WAHA echoes proxy passwords, HMAC keys and custom header values in clear text in session
//! bodies, and `/api/server/environment` returns the API key, dashboard and Swagger passwords
//! and database URLs with credentials. A body kept in an error goes through [`redact_body`]
//! first: JSON values under secret-looking keys are replaced ([`is_secret_field`]), the
//! `user:password@` part of any URL is replaced, the client's own API key is scrubbed from any
//! text, and the result is truncated. The rules err towards hiding too much.

use std::borrow::Cow;

use serde_json::Value;

use crate::secret::REDACTED;

/// The longest body (in bytes) an error keeps.
const MAX_KEPT: usize = 1024;

/// A key whose normalised form (lowercase, without `-`, `_`, `.` and spaces) contains one of
/// these, or ends in `key`, names a secret: `password`, `WAHA_DASHBOARD_PASSWORD`,
/// `proxyPassword`, `accessToken`, `x-api-key`, `hmacKey`, `key`, `Authorization`...
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
];

/// The body, safe to keep in an error and to print.
pub(crate) fn redact_body(body: &[u8], api_key: &str) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            redact_value(&mut value, None);
            value.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    scrub_text(&text, api_key)
}

/// Text from the server (a message string), with the API key and URL credentials removed and
/// the length bounded.
pub(crate) fn scrub_text(text: &str, api_key: &str) -> String {
    let text = if api_key.len() >= 4 && text.contains(api_key) {
        Cow::Owned(text.replace(api_key, REDACTED))
    } else {
        Cow::Borrowed(text)
    };
    truncate(scrub_userinfo(&text).into_owned(), MAX_KEPT)
}

fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a JSON key names a secret (see [`SECRET_WORDS`]).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let normalized = normalize(key);
    normalized.ends_with("key") || SECRET_WORDS.iter().any(|word| normalized.contains(word))
}

/// Whether the value under `key` is a secret, given the nearest enclosing object key `parent`
/// (array indexes skipped): a secret key, or `customHeaders[].value`. Used both to redact
/// bodies and to keep decode errors from quoting a secret.
pub(crate) fn is_secret_field(parent: Option<&str>, key: &str) -> bool {
    is_secret_key(key)
        || (key == "value" && parent.is_some_and(|parent| normalize(parent) == "customheaders"))
}

/// Whether everything under `key` may hold a secret: the objects of a session config that
/// carry one (`hmac`, `proxy`, `customHeaders`), and every secret key. A decode error anywhere
/// under such a key never quotes the value: a `hmac` sent as a string is the key itself.
pub(crate) fn is_secret_parent(key: &str) -> bool {
    matches!(normalize(key).as_str(), "hmac" | "proxy" | "customheaders") || is_secret_key(key)
}

fn redact_value(value: &mut Value, parent: Option<&str>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if is_secret_field(parent, key) && !child.is_null() {
                    *child = Value::String(REDACTED.to_owned());
                } else if let (Some(parent), Value::String(text)) = (parent, &mut *child) {
                    match (normalize(parent).as_str(), key.as_str()) {
                        ("webhooks", "url") => *text = redact_url(text),
                        ("proxy", "server") => *text = redact_authority(text).into_owned(),
                        _ => {}
                    }
                } else {
                    redact_value(child, Some(key));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_value(item, parent);
            }
        }
        _ => {}
    }
}

/// Replaces the credentials of every URL in `text`: `scheme://user:password@host` becomes
/// `scheme://user:<redacted>@host`, `scheme://token@host` becomes `scheme://<redacted>@host`.
///
/// A URL runs from `://` to the next whitespace, quote or angle bracket, and its credentials
/// end at the last `@` in it (passwords may hold `@`, `:` or `/` unencoded). When that guess
/// takes a path for credentials, the path is hidden: too much rather than too little.
pub(crate) fn scrub_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let start = scheme_end + 3;
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '\\'))
            .unwrap_or(after.len());
        let url = &after[..end];
        match url.rfind('@') {
            Some(at) if at > 0 => {
                let userinfo = &url[..at];
                if let Some(colon) = userinfo.find(':') {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(REDACTED);
                } else if userinfo.contains('/') {
                    // `host/path?x=a@b`: an `@` in the path, not credentials.
                    out.push_str(userinfo);
                } else {
                    out.push_str(REDACTED);
                }
                out.push_str(&url[at..]);
            }
            _ => out.push_str(url),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A webhook URL safe to print: its scheme, host and port. Credentials, path, query and
/// fragment each become `<redacted>`, since receivers put tokens in all of them (`?token=`,
/// n8n/Slack/Discord capability paths, `https://token@host`). Text that does not parse as a URL
/// with a host is `<redacted>` as a whole.
pub(crate) fn redact_url(text: &str) -> String {
    let Ok(url) = url::Url::parse(text) else {
        return REDACTED.to_owned();
    };
    let Some(host) = url.host_str() else {
        return REDACTED.to_owned();
    };
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    out.push_str(host);
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push('/');
    if !matches!(url.path(), "" | "/") {
        out.push_str(REDACTED);
    }
    if url.query().is_some() {
        out.push('?');
        out.push_str(REDACTED);
    }
    if url.fragment().is_some() {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

/// A proxy `server` (`host:port`, with or without a scheme) safe to print: credentials written
/// into it (`user:password@host:port`) become `<redacted>@host:port`. Everything up to the last
/// `@` is taken for credentials (a password may hold `@`).
pub(crate) fn redact_authority(server: &str) -> Cow<'_, str> {
    let start = server.find("://").map_or(0, |scheme_end| scheme_end + 3);
    match server[start..].rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{}{REDACTED}{}",
            &server[..start],
            &server[start + at..]
        )),
        None => Cow::Borrowed(server),
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("…(truncated)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_body_secrets_are_redacted() {
        let body = br#"{"name":"s","config":{"proxy":{"server":"p:1","username":"u","password":"pw-123"},
            "webhooks":[{"url":"http://h","hmac":{"key":"hk-456"},"customHeaders":[{"name":"Authorization","value":"tok-789"}]}]}}"#;
        let kept = redact_body(body, "api-key-000");
        for secret in ["pw-123", "hk-456", "tok-789"] {
            assert!(!kept.contains(secret), "{secret} leaked in {kept}");
        }
        assert!(kept.contains("p:1") && kept.contains("Authorization"));
    }

    #[test]
    fn environment_shaped_body_is_redacted() {
        // What `GET /api/server/environment` looks like: settings by their variable names.
        let body = br#"{"WAHA_API_KEY":"env-api-1","WHATSAPP_API_KEY":"env-api-2",
            "WAHA_DASHBOARD_USERNAME":"admin","WAHA_DASHBOARD_PASSWORD":"dash-pw-3",
            "WHATSAPP_SWAGGER_USERNAME":"admin","WHATSAPP_SWAGGER_PASSWORD":"swag-pw-4",
            "WHATSAPP_SESSIONS_POSTGRESQL_URL":"postgres://waha:db-pw-5@db:5432/waha?sslmode=disable",
            "WAHA_MEDIA_STORAGE_URL":"https://tok-6@s3.example/bucket",
            "nested":{"hmacKey":"hk-7","proxyPassword":"pp-8","accessToken":"at-9","client_secret":"cs-10",
                      "note":"see http://u:p@ss:w0rd-11@h:1/x and https://h/p?e=a@b.c"},
            "WHATSAPP_DEFAULT_ENGINE":"NOWEB","WAHA_PRINT_QR":"false"}"#;
        let kept = redact_body(body, "unrelated-key");
        for secret in [
            "env-api-1",
            "env-api-2",
            "dash-pw-3",
            "swag-pw-4",
            "db-pw-5",
            "tok-6",
            "hk-7",
            "pp-8",
            "at-9",
            "cs-10",
            "w0rd-11",
        ] {
            assert!(!kept.contains(secret), "{secret} leaked in {kept}");
        }
        // Not secrets: kept for diagnosis.
        for shown in [
            "NOWEB",
            "WAHA_DASHBOARD_USERNAME",
            "postgres://waha:<redacted>@db:5432/waha?sslmode=disable",
            "https://<redacted>@s3.example/bucket",
            "https://h/p?e=a@b.c",
        ] {
            assert!(kept.contains(shown), "{shown} missing in {kept}");
        }
    }

    #[test]
    fn secret_keys() {
        for key in [
            "password",
            "key",
            "hmacKey",
            "x-api-key",
            "WAHA_API_KEY",
            "proxyPassword",
            "accessToken",
            "Authorization",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["name", "server", "username", "url", "events", "value"] {
            assert!(!is_secret_key(key), "{key}");
        }
        for parent in [
            "hmac",
            "proxy",
            "customHeaders",
            "custom_headers",
            "hmacKey",
        ] {
            assert!(is_secret_parent(parent), "{parent}");
        }
        for parent in ["webhooks", "config", "metadata", "noweb"] {
            assert!(!is_secret_parent(parent), "{parent}");
        }
        assert!(is_secret_field(Some("customHeaders"), "value"));
        assert!(is_secret_field(Some("custom_headers"), "value"));
        assert!(!is_secret_field(Some("metadata"), "value"));
    }

    #[test]
    fn webhook_urls_and_proxy_servers_keep_only_where_they_point() {
        for (url, shown) in [
            ("http://h:9/", "http://h:9/"),
            ("http://h", "http://h/"),
            (
                "https://tok@h.example/n8n/webhook/0c1d?token=t#f",
                "https://<redacted>@h.example/<redacted>?<redacted>#<redacted>",
            ),
            (
                "http://u:p@[::1]:8080/x",
                "http://<redacted>@[::1]:8080/<redacted>",
            ),
            // `?` ends the authority: `u` and `pa` are not a host and a port.
            ("http://u:pa?ss@h/", "<redacted>"),
            ("not a url", "<redacted>"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        for (server, shown) in [
            ("p:3128", "p:3128"),
            ("u:p@ss@p:3128", "<redacted>@p:3128"),
            ("http://u:pw@p:3128", "http://<redacted>@p:3128"),
        ] {
            assert_eq!(redact_authority(server), shown, "{server}");
        }
        let body = br#"{"config":{"proxy":{"server":"u:pw-1@p:3128"},
            "webhooks":[{"url":"https://h/hook-2?token=tk-3","events":[]}]},"note":"https://h/p?e=x"}"#;
        let kept = redact_body(body, "k");
        for secret in ["pw-1", "hook-2", "tk-3"] {
            assert!(!kept.contains(secret), "{secret} leaked in {kept}");
        }
        assert!(kept.contains("https://h/p?e=x"), "{kept}");
    }

    #[test]
    fn api_key_is_scrubbed_from_text_and_long_bodies_are_truncated() {
        let kept = redact_body(b"<html>WAHA_API_KEY=api-key-000</html>", "api-key-000");
        assert_eq!(kept, "<html>WAHA_API_KEY=<redacted></html>");
        let long = "é".repeat(2000);
        let kept = redact_body(long.as_bytes(), "k");
        assert!(kept.len() < MAX_KEPT + 20 && kept.ends_with("(truncated)"));
        assert_eq!(
            truncate(format!("x{}", "é".repeat(400)), 300).len(),
            299 + "…(truncated)".len()
        );
    }
}
