//! Deserialisers for the loose shapes the real server sends (`null` where a list or map is
//! expected, whole numbers sent as floats).

use serde::{Deserialize, Deserializer};

/// `null` or a missing field becomes `T::default()`.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A non-negative whole number (milliseconds, seconds) sent as an integer or a float
/// (JavaScript has only doubles); a fraction is dropped.
pub(crate) fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    to_whole_number::<D>(f64::deserialize(deserializer)?)
}

/// Like [`whole_number`], for an optional field that may also be `null`.
pub(crate) fn optional_whole_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    Option::<f64>::deserialize(deserializer)?
        .map(to_whole_number::<D>)
        .transpose()
}

/// Like [`optional_whole_number`], for a `u32` field (retry counts and delays); a value above
/// `u32::MAX` is refused.
pub(crate) fn optional_whole_u32<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    optional_whole_number(deserializer)?
        .map(|value| {
            u32::try_from(value).map_err(|_| {
                serde::de::Error::custom(format!("expected at most {}, got {value}", u32::MAX))
            })
        })
        .transpose()
}

fn to_whole_number<'de, D: Deserializer<'de>>(value: f64) -> Result<u64, D::Error> {
    if value.is_finite() && value >= 0.0 {
        // Truncation is the intent: a fraction of a millisecond or second carries no meaning here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(value as u64)
    } else {
        Err(serde::de::Error::custom(format!(
            "expected a non-negative number, got {value}"
        )))
    }
}

/// An optional secret; `null`, a missing field, or a value the secret type refuses (empty,
/// control characters) becomes `None`, so one odd config stored on the server (by another
/// client) cannot make a whole session list undecodable. The refused value is never quoted.
pub(crate) fn valid_secret_or_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String>,
{
    Ok(Option::<String>::deserialize(deserializer)?.and_then(|value| T::try_from(value).ok()))
}

#[cfg(test)]
mod tests {
    use crate::model::{WebhookRetries, WebhookRetryPolicy};

    #[test]
    fn retry_numbers_read_as_whole_numbers_from_integers_and_floats() {
        // WAHA types both as JSON `number`; a server that stores doubles echoes `2.0`.
        for body in [
            r#"{"policy":"exponential","delaySeconds":2,"attempts":12}"#,
            r#"{"policy":"exponential","delaySeconds":2.0,"attempts":12.0}"#,
        ] {
            let retries: WebhookRetries = serde_json::from_str(body).unwrap();
            assert_eq!(retries.policy, Some(WebhookRetryPolicy::Exponential));
            assert_eq!(retries.delay_seconds, Some(2));
            assert_eq!(retries.attempts, Some(12));
        }
        let fraction: WebhookRetries = serde_json::from_str(r#"{"delaySeconds":2.5}"#).unwrap();
        assert_eq!(fraction.delay_seconds, Some(2), "a fraction is dropped");
        let missing: WebhookRetries = serde_json::from_str(r#"{"delaySeconds":null}"#).unwrap();
        assert_eq!(missing.delay_seconds, None);
        for refused in [r#"{"delaySeconds":-1}"#, r#"{"attempts":1e12}"#] {
            assert!(
                serde_json::from_str::<WebhookRetries>(refused).is_err(),
                "{refused} is refused"
            );
        }
    }
}
