//! Redaction of server bodies before they are kept in an error.
//!
//! WAHA echoes proxy passwords, HMAC keys and custom header values in clear text in session
//! bodies, and `/api/server/environment` even returns the API key. A body kept in
//! [`WahaError::Api`](crate::WahaError::Api) goes through [`redact_body`] first: JSON values
//! under secret-looking keys are replaced, the client's own API key is scrubbed from any text,
//! and the result is truncated.

use serde_json::Value;

use crate::secret::REDACTED;

/// The longest body (in bytes) an error keeps.
const MAX_KEPT: usize = 1024;

/// Keys whose values are secrets, compared case-insensitively with `-` and `_` removed.
const SECRET_KEYS: &[&str] = &[
    "password",
    "key",
    "apikey",
    "xapikey",
    "secret",
    "token",
    "authorization",
    "whatsappapikey",
    "wahaapikey",
];

/// The body, safe to keep in an error and to print.
pub(crate) fn redact_body(body: &[u8], api_key: &str) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            redact_value(&mut value, false);
            value.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    scrub_text(&text, api_key)
}

/// Text from the server (a message string), with the API key removed and the length bounded.
pub(crate) fn scrub_text(text: &str, api_key: &str) -> String {
    let text = if api_key.len() >= 4 && text.contains(api_key) {
        text.replace(api_key, REDACTED)
    } else {
        text.to_owned()
    };
    truncate(text)
}

/// Whether a JSON key (or a JSON path segment) names a secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_KEYS.contains(&normalized.as_str())
}

fn redact_value(value: &mut Value, in_custom_headers: bool) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                let secret = is_secret_key(key) || (in_custom_headers && key == "value");
                if secret && !child.is_null() {
                    *child = Value::String(REDACTED.to_owned());
                } else {
                    redact_value(child, key == "customHeaders");
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_value(item, in_custom_headers);
            }
        }
        _ => {}
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_KEPT {
        let mut end = MAX_KEPT;
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
    fn api_key_is_scrubbed_from_text_and_long_bodies_are_truncated() {
        let kept = redact_body(b"<html>WAHA_API_KEY=api-key-000</html>", "api-key-000");
        assert_eq!(kept, "<html>WAHA_API_KEY=<redacted></html>");
        let long = "é".repeat(2000);
        let kept = redact_body(long.as_bytes(), "k");
        assert!(kept.len() < MAX_KEPT + 20 && kept.ends_with("(truncated)"));
    }
}
