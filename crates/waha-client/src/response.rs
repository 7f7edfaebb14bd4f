//! From an HTTP exchange to a typed result: the mapping of WAHA's answers
//! (`docs/waha-contract.md`, "Error bodies" and the errors of "Calls and their answers") to
//! [`WahaError`], JSON decoding that names the failing path, and transport errors.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{TransientCause, WahaError};
use crate::model::SessionStatus;
use crate::redact::{
    is_secret_field, is_secret_parent, redact_body, scrub_text, scrub_userinfo, truncate,
};

/// The longest serde message (in bytes) a decode error keeps.
const MAX_DECODE_MESSAGE: usize = 300;

/// The typed error for a non-success answer.
///
/// | answer | error |
/// |---|---|
/// | 401, 403 | `Unauthorized` |
/// | 404 | `NotFound` |
/// | 422 with `expected` (the QR route) | `NotReady` |
/// | 422 "... already exists ..." | `AlreadyExists` |
/// | 422 "... is already started ..." | `AlreadyStarted` |
/// | 422 "... support only 'default' session ..." | `SingleSessionServer` |
/// | 400 with a NestJS error body (`statusCode: 400`, or `message` a list of strings) | `Invalid` |
/// | any other 400 (empty, HTML, plain text, other JSON) | `Transient(Booting)` |
/// | 429, 502, 503, 504 | `Transient(Unavailable)` |
/// | anything else | `Api` with the redacted body |
pub(crate) fn classify(status: StatusCode, body: &[u8], api_key: &str) -> WahaError {
    let json = serde_json::from_slice::<Value>(body).ok();
    let message = json
        .as_ref()
        .and_then(|json| json.get("message"))
        .and_then(Value::as_str)
        .or_else(|| {
            json.as_ref()
                .and_then(|json| json.get("error"))
                .and_then(Value::as_str)
        })
        .map(|message| scrub_text(message, api_key));
    let message_or = |fallback: &str| message.clone().unwrap_or_else(|| fallback.to_owned());

    match status.as_u16() {
        401 | 403 => WahaError::Unauthorized {
            status: status.as_u16(),
        },
        404 => WahaError::NotFound {
            message: message_or("not found"),
        },
        422 => {
            let json = json.as_ref();
            if let Some(expected) = json.and_then(|json| json.get("expected")) {
                return WahaError::NotReady {
                    session: json
                        .and_then(|json| json.get("session"))
                        .and_then(Value::as_str)
                        .map(|session| scrub_text(session, api_key)),
                    status: json
                        .and_then(|json| json.get("status"))
                        .and_then(Value::as_str)
                        .map(SessionStatus::from),
                    expected: expected
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(SessionStatus::from)
                        .collect(),
                };
            }
            let text = message.clone().unwrap_or_default();
            let lower = text.to_lowercase();
            if lower.contains("already exists") {
                WahaError::AlreadyExists { message: text }
            } else if lower.contains("already started") {
                WahaError::AlreadyStarted { message: text }
            } else if lower.contains("only 'default' session")
                || lower.contains("only \"default\" session")
            {
                WahaError::SingleSessionServer { message: text }
            } else {
                api(status, body, api_key)
            }
        }
        400 => match nest_error_messages(json.as_ref(), api_key) {
            Some(messages) => WahaError::Invalid { messages },
            None => WahaError::Transient {
                cause: TransientCause::Booting,
                detail: format!(
                    "HTTP 400 that is not a NestJS error body: {}",
                    redact_body(body, api_key)
                ),
            },
        },
        429 | 502 | 503 | 504 => WahaError::Transient {
            cause: TransientCause::Unavailable {
                status: status.as_u16(),
            },
            detail: redact_body(body, api_key),
        },
        _ => api(status, body, api_key),
    }
}

fn api(status: StatusCode, body: &[u8], api_key: &str) -> WahaError {
    WahaError::Api {
        status: status.as_u16(),
        body: redact_body(body, api_key),
    }
}

/// The messages of a 400 that is NestJS judging the request: its error body, a JSON object
/// with `statusCode: 400` (the ValidationPipe's list of messages, a `Validation failed (...)`
/// string from a parse pipe, the body parser's JSON message...), or any JSON object whose
/// `message` is a non-empty list of strings. Anything else (empty, HTML, plain text, other
/// JSON) is not a verdict on the request: `None` (see `docs/waha-client.md`, "Booting 400").
fn nest_error_messages(json: Option<&Value>, api_key: &str) -> Option<Vec<String>> {
    let json = json?.as_object()?;
    let list: Vec<String> = json
        .get("message")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|message| scrub_text(message, api_key))
        .collect();
    if !list.is_empty() {
        return Some(list);
    }
    if json.get("statusCode").and_then(Value::as_u64) != Some(400) {
        return None;
    }
    let text = [json.get("message"), json.get("error")]
        .into_iter()
        .flatten()
        .find_map(Value::as_str)
        .unwrap_or("Bad Request");
    Some(vec![scrub_text(text, api_key)])
}

/// Decodes a JSON answer; an error names the JSON path that failed. An empty body is a
/// [`WahaError::Decode`] too: use [`decode_optional`] for the answers `docs/waha-contract.md`
/// ("Sessions") says may be empty.
///
/// The success path is plain serde: path tracking costs on every value it visits, so it runs
/// only after a failure, to name the path (decoding is deterministic, so it fails again at the
/// same place).
pub(crate) fn decode<T: DeserializeOwned>(
    operation: &'static str,
    body: &[u8],
) -> Result<T, WahaError> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(WahaError::Decode {
            operation,
            path: ".".into(),
            message: "the answer has an empty body where a JSON value was expected".into(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|err| decode_error(operation, "", err))
}

/// Like [`decode`], but an empty (or all-whitespace) body is `None`: WAHA answers some calls
/// with 200/201 and no body.
pub(crate) fn decode_optional<T: DeserializeOwned>(
    operation: &'static str,
    body: &[u8],
) -> Result<Option<T>, WahaError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(None)
    } else {
        decode(operation, body).map(Some)
    }
}

/// Decodes a part of an already parsed document; `prefix` is that part's path.
pub(crate) fn decode_value<T: DeserializeOwned>(
    operation: &'static str,
    prefix: &str,
    value: Value,
) -> Result<T, WahaError> {
    // As in [`decode`]: plain serde first, path tracking only to explain a failure.
    if let Ok(decoded) = T::deserialize(&value) {
        return Ok(decoded);
    }
    serde_path_to_error::deserialize(value).map_err(|err| decode_error(operation, prefix, err))
}

fn decode_error<E: std::fmt::Display>(
    operation: &'static str,
    prefix: &str,
    err: serde_path_to_error::Error<E>,
) -> WahaError {
    let inner = err.path().to_string();
    let mut path = match (prefix.is_empty(), inner.as_str()) {
        (true, _) => inner.clone(),
        (false, ".") => prefix.to_owned(),
        (false, _) => format!("{prefix}.{inner}"),
    };
    // serde's messages quote the offending value. Never keep one under a secret field or
    // anywhere under a secret-bearing parent (`hmac`, `proxy`, `customHeaders`, a secret key).
    let mut parent: Option<&str> = None;
    let mut secret = false;
    for segment in err.path().iter() {
        if let serde_path_to_error::Segment::Map { key } = segment {
            secret |= is_secret_field(parent, key) || is_secret_parent(key);
            parent = Some(key);
        }
    }
    let secret = secret || prefix.split('.').any(is_secret_parent);
    let text = err.into_inner().to_string();
    // A missing field is reported at its object; name the field itself (a name from our own
    // types, not from the answer).
    if let Some(field) = missing_field(&text) {
        if path == "." {
            path = field.to_owned();
        } else {
            path = format!("{path}.{field}");
        }
    }
    let message = if secret {
        "invalid value (not shown: secret field)".to_owned()
    } else {
        truncate(
            scrub_userinfo(&without_quoted_strings(&text)).into_owned(),
            MAX_DECODE_MESSAGE,
        )
    };
    WahaError::Decode {
        operation,
        path,
        message,
    }
}

/// The field of serde's "missing field `name`" message.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

/// serde's message without the string values it quotes: `string "..."` becomes
/// `string (not shown)`, and an unknown variant is not named. Any string in an answer may be a
/// secret (a `hmac` or a whole webhook URL sent as a string), so none is kept, wherever it is.
fn without_quoted_strings(message: &str) -> std::borrow::Cow<'_, str> {
    const STRING: &str = "string \"";
    const VARIANT: &str = "unknown variant `";
    if let Some(start) = message.find(VARIANT) {
        // The variant is written raw (unescaped) and the rest of the message cannot be told
        // from it reliably: drop both.
        return format!("{}unknown variant (not shown)", &message[..start]).into();
    }
    if !message.contains(STRING) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(STRING) {
        out.push_str(&rest[..start]);
        out.push_str("string (not shown)");
        // The string is written Rust-escaped (`{:?}`): it ends at the first unescaped `"`;
        // without one, everything after the opening quote is dropped.
        let quoted = &rest[start + STRING.len()..];
        let mut end = quoted.len();
        let mut chars = quoted.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = at + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &quoted[end..];
    }
    out.push_str(rest);
    out.into()
}

/// A reqwest failure, as a typed error without the URL.
pub(crate) fn transport(err: reqwest::Error) -> WahaError {
    let cause = if err.is_connect() {
        TransientCause::Connect
    } else if err.is_timeout() {
        TransientCause::Timeout
    } else if err.is_builder() {
        return WahaError::invalid(format!(
            "could not build the request: {}",
            err.without_url()
        ));
    } else {
        TransientCause::Disconnected
    };
    let err = err.without_url();
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(inner) = source {
        detail.push_str(": ");
        detail.push_str(&inner.to_string());
        source = inner.source();
    }
    WahaError::Transient { cause, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_are_dropped_from_serde_messages() {
        for (message, kept) in [
            (
                r#"invalid type: string "s3cr\"et", expected u64 at line 1 column 9"#,
                "invalid type: string (not shown), expected u64 at line 1 column 9",
            ),
            (
                r#"invalid value: string "a\\", expected x; string "b""#,
                "invalid value: string (not shown), expected x; string (not shown)",
            ),
            (
                r#"invalid type: string "cut"#,
                "invalid type: string (not shown)",
            ),
            (
                "unknown variant `s3cret`, expected `linear` at line 1 column 3",
                "unknown variant (not shown)",
            ),
            (
                "invalid type: integer `5`, expected a string",
                "invalid type: integer `5`, expected a string",
            ),
        ] {
            assert_eq!(without_quoted_strings(message), kept, "{message}");
        }
        assert_eq!(
            missing_field("missing field `fromMe` at line 1 column 2"),
            Some("fromMe")
        );
        assert_eq!(missing_field("invalid type: null"), None);
    }
}
