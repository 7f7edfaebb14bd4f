//! Query parameters, read the way WAHA (Express + NestJS) reads them: a key given more than once
//! becomes a list, and each route applies its own DTO rules to what it gets.

use crate::wire::ApiError;

/// Every value of `key` in `query`, in order (decoded; `+` is a space).
fn values(query: Option<&str>, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// An optional boolean parameter with WAHA's `@Transform(BooleanString) @IsBoolean()
/// @IsOptional()` rules: `true`, `True`, `1` and `false`, `False`, `0` are booleans; anything
/// else, the empty string and a repeated key (a list) is a 400 `<key> must be a boolean value`.
pub(crate) fn optional_bool(query: Option<&str>, key: &str) -> Result<Option<bool>, ApiError> {
    let values = values(query, key);
    match values.as_slice() {
        [] => Ok(None),
        [one] => match one.as_str() {
            "true" | "True" | "1" => Ok(Some(true)),
            "false" | "False" | "0" => Ok(Some(false)),
            _ => Err(not_a_boolean(key)),
        },
        _ => Err(not_a_boolean(key)),
    }
}

fn not_a_boolean(key: &str) -> ApiError {
    ApiError::Validation(vec![format!("{key} must be a boolean value")])
}

/// What `GET /api/{session}/auth/qr` answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QrFormat {
    /// The PNG (or its base64 JSON form, by `Accept`).
    Image,
    /// `{"value": "<qr text>"}`.
    Raw,
}

impl QrFormat {
    /// WAHA's `QRCodeQuery.format` carries no validator and the controller only tests
    /// `format == 'raw'`: every other value, documented (`image`) or not, gives the image. A
    /// repeated key is a list, which JavaScript's `==` compares as its comma-joined text, so
    /// `format=raw&format=raw` is not `raw` either.
    pub(crate) fn from_query(query: Option<&str>) -> Self {
        if values(query, "format").join(",") == "raw" {
            Self::Raw
        } else {
            Self::Image
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: ApiError) -> Vec<String> {
        match error {
            ApiError::Validation(messages) => messages,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn booleans_as_waha_transforms_them() {
        for (text, value) in [
            ("true", true),
            ("True", true),
            ("1", true),
            ("false", false),
            ("False", false),
            ("0", false),
        ] {
            let query = format!("all={text}");
            assert_eq!(optional_bool(Some(&query), "all").unwrap(), Some(value));
        }
        assert_eq!(optional_bool(None, "all").unwrap(), None);
        assert_eq!(optional_bool(Some("other=1"), "all").unwrap(), None);
        for bad in [
            "all=TRUE",
            "all=yes",
            "all=",
            "all",
            "all=true&all=true",
            "all=2",
        ] {
            assert_eq!(
                message(optional_bool(Some(bad), "all").unwrap_err()),
                vec!["all must be a boolean value"],
                "{bad}"
            );
        }
    }

    #[test]
    fn only_a_single_raw_is_raw() {
        assert_eq!(QrFormat::from_query(Some("format=raw")), QrFormat::Raw);
        assert_eq!(QrFormat::from_query(Some("a=1&format=raw")), QrFormat::Raw);
        for image in [
            None,
            Some(""),
            Some("format=image"),
            Some("format=RAW"),
            Some("format=svg"),
            Some("format="),
            Some("format=raw&format=raw"),
            Some("format=image&format=raw"),
        ] {
            assert_eq!(QrFormat::from_query(image), QrFormat::Image, "{image:?}");
        }
    }
}
