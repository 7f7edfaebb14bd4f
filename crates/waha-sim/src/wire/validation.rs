//! Body parsing and validation with NestJS/class-validator style messages: every problem is
//! collected, and the answer is one 400 with `message` as a list.

use serde_json::{Map, Value};

use crate::wire::{ApiError, KNOWN_EVENTS, SessionConfig};

/// WAHA's limit on session names (in UTF-16 code units, as JavaScript counts).
pub(crate) const MAX_NAME_LEN: usize = 54;

/// A validated `POST /api/sessions` body.
#[derive(Debug)]
pub(crate) struct CreateRequest {
    pub(crate) name: Option<String>,
    pub(crate) start: bool,
    pub(crate) config: Option<SessionConfig>,
}

/// Parses a JSON body; an empty body counts as `{}`, malformed JSON is a 400 with the parser's
/// message, anything but an object is a validation error.
pub(crate) fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::Validation(vec![
            "request body must be a JSON object".to_owned(),
        ])),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

/// Validates a create body.
pub(crate) fn validate_create(body: &Map<String, Value>) -> Result<CreateRequest, ApiError> {
    let mut errors = Vec::new();
    let name = match body.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            if name.encode_utf16().count() > MAX_NAME_LEN {
                errors.push(format!(
                    "name must be shorter than or equal to {MAX_NAME_LEN} characters"
                ));
            }
            Some(name.clone())
        }
        Some(_) => {
            errors.push("name must be a string".to_owned());
            None
        }
    };
    let start = match body.get("start") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(start)) => *start,
        Some(_) => {
            errors.push("start must be a boolean value".to_owned());
            false
        }
    };
    let config = config_field(body, &mut errors);
    if errors.is_empty() {
        Ok(CreateRequest {
            name,
            start,
            config,
        })
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Validates an update body (`{config}`).
pub(crate) fn validate_update(
    body: &Map<String, Value>,
) -> Result<Option<SessionConfig>, ApiError> {
    let mut errors = Vec::new();
    let config = config_field(body, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Reads required string fields, in order; every missing or non-string one is listed.
pub(crate) fn required_strings<const N: usize>(
    body: &Map<String, Value>,
    fields: [&str; N],
) -> Result<[String; N], ApiError> {
    let mut errors = Vec::new();
    let values = fields.map(|field| match body.get(field) {
        Some(Value::String(s)) => s.clone(),
        _ => {
            errors.push(format!("{field} must be a string"));
            String::new()
        }
    });
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn config_field(body: &Map<String, Value>, errors: &mut Vec<String>) -> Option<SessionConfig> {
    let value = body.get("config")?;
    if value.is_null() {
        return None;
    }
    let before = errors.len();
    check_config("config", value, errors);
    if errors.len() > before {
        return None;
    }
    match serde_json::from_value::<SessionConfig>(value.clone()) {
        Ok(config) => Some(config),
        Err(e) => {
            errors.push(format!("config is invalid: {e}"));
            None
        }
    }
}

fn check_config(path: &str, value: &Value, errors: &mut Vec<String>) {
    let Some(config) = as_object(path, value, errors) else {
        return;
    };
    if let Some(metadata) = present(config, "metadata") {
        let p = format!("{path}.metadata");
        // WAHA's own wording, once whatever the number of offending values.
        if let Some(map) = as_object(&p, metadata, errors)
            && map.values().any(|v| !v.is_string())
        {
            errors.push(format!("{p} accepts string key-value pairs only"));
        }
    }
    if let Some(proxy) = present(config, "proxy") {
        let p = format!("{path}.proxy");
        if let Some(map) = as_object(&p, proxy, errors) {
            string_field(&p, map, "server", true, errors);
            string_field(&p, map, "username", false, errors);
            string_field(&p, map, "password", false, errors);
        }
    }
    bool_field(path, config, "debug", errors);
    if let Some(noweb) = present(config, "noweb") {
        let p = format!("{path}.noweb");
        if let Some(map) = as_object(&p, noweb, errors) {
            bool_field(&p, map, "markOnline", errors);
            if let Some(store) = present(map, "store") {
                let sp = format!("{p}.store");
                if let Some(store) = as_object(&sp, store, errors) {
                    bool_field(&sp, store, "enabled", errors);
                    bool_field(&sp, store, "fullSync", errors);
                }
            }
        }
    }
    if let Some(client) = present(config, "client") {
        let p = format!("{path}.client");
        if let Some(map) = as_object(&p, client, errors) {
            string_field(&p, map, "deviceName", false, errors);
            string_field(&p, map, "browserName", false, errors);
        }
    }
    if let Some(webhooks) = present(config, "webhooks") {
        let p = format!("{path}.webhooks");
        match webhooks {
            Value::Array(list) => {
                for (i, webhook) in list.iter().enumerate() {
                    check_webhook(&format!("{p}.{i}"), webhook, errors);
                }
            }
            _ => errors.push(format!("{p} must be an array")),
        }
    }
}

fn check_webhook(path: &str, value: &Value, errors: &mut Vec<String>) {
    let Some(webhook) = as_object(path, value, errors) else {
        return;
    };
    match webhook.get("url") {
        Some(Value::String(url)) if is_url(url) => {}
        _ => errors.push(format!("{path}.url must be a URL address")),
    }
    match webhook.get("events") {
        Some(Value::Array(events)) => {
            let unknown = events
                .iter()
                .any(|e| !e.as_str().is_some_and(|e| KNOWN_EVENTS.contains(&e)));
            if unknown {
                errors.push(format!(
                    "{path}.each value in events must be one of the following values: {}",
                    KNOWN_EVENTS.join(", ")
                ));
            }
        }
        _ => errors.push(format!("{path}.events must be an array")),
    }
    if let Some(hmac) = present(webhook, "hmac") {
        let p = format!("{path}.hmac");
        if let Some(map) = as_object(&p, hmac, errors) {
            string_field(&p, map, "key", false, errors);
        }
    }
    if let Some(retries) = present(webhook, "retries") {
        let p = format!("{path}.retries");
        if let Some(map) = as_object(&p, retries, errors) {
            if present(map, "policy").is_some_and(|policy| {
                !matches!(policy.as_str(), Some("constant" | "linear" | "exponential"))
            }) {
                errors.push(format!(
                    "{p}.policy must be one of the following values: constant, linear, \
                     exponential"
                ));
            }
            if present(map, "delaySeconds")
                .is_some_and(|delay| delay.as_f64().is_none_or(|d| d < 0.0))
            {
                errors.push(format!("{p}.delaySeconds must not be less than 0"));
            }
            if present(map, "attempts")
                .is_some_and(|attempts| attempts.as_u64().is_none_or(|a| a > u64::from(u32::MAX)))
            {
                errors.push(format!("{p}.attempts must be a non-negative integer"));
            }
        }
    }
    if let Some(headers) = present(webhook, "customHeaders") {
        let p = format!("{path}.customHeaders");
        match headers {
            Value::Array(list) => {
                for (i, header) in list.iter().enumerate() {
                    let hp = format!("{p}.{i}");
                    if let Some(map) = as_object(&hp, header, errors) {
                        string_field(&hp, map, "name", true, errors);
                        string_field(&hp, map, "value", true, errors);
                        let valid_name = map
                            .get("name")
                            .and_then(Value::as_str)
                            .is_none_or(|n| http::HeaderName::from_bytes(n.as_bytes()).is_ok());
                        let valid_value = map
                            .get("value")
                            .and_then(Value::as_str)
                            .is_none_or(|v| http::HeaderValue::from_str(v).is_ok());
                        if !valid_name || !valid_value {
                            errors.push(format!("{hp} must be a valid HTTP header"));
                        }
                    }
                }
            }
            _ => errors.push(format!("{p} must be an array")),
        }
    }
}

fn is_url(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn as_object<'a>(
    path: &str,
    value: &'a Value,
    errors: &mut Vec<String>,
) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => {
            errors.push(format!(
                "nested property {path} must be either object or array"
            ));
            None
        }
    }
}

fn string_field(
    path: &str,
    map: &Map<String, Value>,
    key: &str,
    required: bool,
    errors: &mut Vec<String>,
) {
    match map.get(key) {
        Some(Value::String(_)) => {}
        None | Some(Value::Null) if !required => {}
        _ => errors.push(format!("{path}.{key} must be a string")),
    }
}

fn bool_field(path: &str, map: &Map<String, Value>, key: &str, errors: &mut Vec<String>) {
    match map.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => errors.push(format!("{path}.{key} must be a boolean value")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn messages(body: Value) -> Vec<String> {
        let map = body.as_object().unwrap().clone();
        match validate_create(&map) {
            Err(ApiError::Validation(m)) => m,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn name_length_counts_like_javascript() {
        let ok = json!({"name": "a".repeat(54)});
        assert!(validate_create(ok.as_object().unwrap()).is_ok());
        assert_eq!(
            messages(json!({"name": "a".repeat(55)})),
            vec!["name must be shorter than or equal to 54 characters"]
        );
        // Names are not checked for characters at all.
        assert!(validate_create(json!({"name": "../x"}).as_object().unwrap()).is_ok());
    }

    #[test]
    fn every_problem_is_listed() {
        let m = messages(json!({
            "start": "yes",
            "config": {
                "metadata": {"n": 1, "m": true, "ok": "yes"},
                "proxy": {"username": "u"},
                "webhooks": [{"url": "not a url", "events": ["*"],
                              "retries": {"policy": "sometimes"}}]
            }
        }));
        assert_eq!(m.len(), 6, "{m:?}");
        assert!(m.contains(&"start must be a boolean value".to_owned()));
        assert!(m.contains(&"config.metadata accepts string key-value pairs only".to_owned()));
        assert!(m.contains(&"config.proxy.server must be a string".to_owned()));
        assert!(m.contains(&"config.webhooks.0.url must be a URL address".to_owned()));
        assert!(
            m.iter()
                .any(|s| s.starts_with("config.webhooks.0.each value in events"))
        );
        assert!(
            m.iter()
                .any(|s| s.starts_with("config.webhooks.0.retries.policy"))
        );
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        assert!(matches!(
            parse_body(b"{\"name\":"),
            Err(ApiError::Message(s, _)) if s.as_u16() == 400
        ));
        assert!(parse_body(b"").unwrap().is_empty());
    }
}
