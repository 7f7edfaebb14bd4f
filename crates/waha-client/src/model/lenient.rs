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
