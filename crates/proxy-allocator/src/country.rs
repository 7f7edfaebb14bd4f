//! ISO 3166-1 alpha-2 country codes, and the country of a phone number.
//!
//! A phone number's country comes from libphonenumber's numbering-plan metadata (the maintained
//! `phonenumber` crate), which tells apart the countries that share a calling code: `+1` is the
//! United States, Canada and the Caribbean, `+7` Russia and Kazakhstan, `+44` the United Kingdom,
//! Guernsey, Jersey and the Isle of Man.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ProxyError;

/// An ISO 3166-1 alpha-2 country code, stored upper-case (`BR`, `US`, `PT`).
///
/// Parsing accepts either case and rejects anything that is not two ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code as text, upper-case.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII upper-case letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The code in lower case (`br`), as many gateways expect it in usernames.
    pub fn to_lowercase(&self) -> String {
        self.as_str().to_ascii_lowercase()
    }

    pub(crate) const fn from_static(code: &'static str) -> Self {
        let b = code.as_bytes();
        Self([b[0], b[1]])
    }
}

impl FromStr for CountryCode {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_alphabetic) {
            return Err(ProxyError::config(
                "a country must be an ISO 3166-1 alpha-2 code (two letters, e.g. BR)",
            ));
        }
        Ok(Self([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

impl Serialize for CountryCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// International calling codes and the country earlier releases matched each one to.
///
/// No longer consulted: [`country_for_phone`] reads libphonenumber's metadata, which tells the
/// members of a shared code apart (this table mapped every `+1` to `US` and every `+7` to `RU`).
/// Kept so that code naming it still builds; it will be removed in the next breaking release.
#[deprecated(
    note = "country_for_phone uses libphonenumber's metadata (the phonenumber crate); this table \
            is no longer consulted"
)]
pub const CALLING_CODES: &[(&str, CountryCode)] = &[
    ("1", CountryCode::from_static("US")),
    ("7", CountryCode::from_static("RU")),
    ("20", CountryCode::from_static("EG")),
    ("27", CountryCode::from_static("ZA")),
    ("30", CountryCode::from_static("GR")),
    ("31", CountryCode::from_static("NL")),
    ("32", CountryCode::from_static("BE")),
    ("33", CountryCode::from_static("FR")),
    ("34", CountryCode::from_static("ES")),
    ("36", CountryCode::from_static("HU")),
    ("39", CountryCode::from_static("IT")),
    ("40", CountryCode::from_static("RO")),
    ("41", CountryCode::from_static("CH")),
    ("43", CountryCode::from_static("AT")),
    ("44", CountryCode::from_static("GB")),
    ("45", CountryCode::from_static("DK")),
    ("46", CountryCode::from_static("SE")),
    ("47", CountryCode::from_static("NO")),
    ("48", CountryCode::from_static("PL")),
    ("49", CountryCode::from_static("DE")),
    ("51", CountryCode::from_static("PE")),
    ("52", CountryCode::from_static("MX")),
    ("53", CountryCode::from_static("CU")),
    ("54", CountryCode::from_static("AR")),
    ("55", CountryCode::from_static("BR")),
    ("56", CountryCode::from_static("CL")),
    ("57", CountryCode::from_static("CO")),
    ("58", CountryCode::from_static("VE")),
    ("60", CountryCode::from_static("MY")),
    ("61", CountryCode::from_static("AU")),
    ("62", CountryCode::from_static("ID")),
    ("63", CountryCode::from_static("PH")),
    ("64", CountryCode::from_static("NZ")),
    ("65", CountryCode::from_static("SG")),
    ("66", CountryCode::from_static("TH")),
    ("81", CountryCode::from_static("JP")),
    ("82", CountryCode::from_static("KR")),
    ("84", CountryCode::from_static("VN")),
    ("86", CountryCode::from_static("CN")),
    ("90", CountryCode::from_static("TR")),
    ("91", CountryCode::from_static("IN")),
    ("92", CountryCode::from_static("PK")),
    ("212", CountryCode::from_static("MA")),
    ("234", CountryCode::from_static("NG")),
    ("244", CountryCode::from_static("AO")),
    ("254", CountryCode::from_static("KE")),
    ("258", CountryCode::from_static("MZ")),
    ("351", CountryCode::from_static("PT")),
    ("353", CountryCode::from_static("IE")),
    ("358", CountryCode::from_static("FI")),
    ("380", CountryCode::from_static("UA")),
    ("420", CountryCode::from_static("CZ")),
    ("502", CountryCode::from_static("GT")),
    ("506", CountryCode::from_static("CR")),
    ("507", CountryCode::from_static("PA")),
    ("591", CountryCode::from_static("BO")),
    ("593", CountryCode::from_static("EC")),
    ("595", CountryCode::from_static("PY")),
    ("598", CountryCode::from_static("UY")),
    ("966", CountryCode::from_static("SA")),
    ("971", CountryCode::from_static("AE")),
    ("972", CountryCode::from_static("IL")),
];

/// The country of a phone number in international form, from libphonenumber's metadata.
///
/// Accepts `+55 11 99999-9999`, `5511999999999`, `005511999999999` and WhatsApp chat ids such as
/// `5511999999999@c.us`: separators (space, `-`, `.`, parentheses) are ignored, and the number
/// is read as international whether or not it starts with `+`. A calling code shared by
/// several countries is resolved by the number's own digits, as libphonenumber does: `+1 416`
/// is Canada, `+1 876` Jamaica, `+1 415` the United States, `+7 7` Kazakhstan, `+7 9` Russia.
///
/// Returns `None` when the number has letters or other characters, fewer than 8 or more than 15
/// digits (E.164), no known calling code, or no single country: a number under a shared code
/// that no member's numbering plan covers (it is not guessed to be the largest member's), or a
/// non-geographic code such as `+800`. The first call loads the metadata (once per process).
///
/// ```
/// use proxy_allocator::{country_for_phone, CountryCode};
/// let country = |code: &str| code.parse::<CountryCode>().ok();
/// assert_eq!(country_for_phone("+55 11 99999-9999"), country("BR"));
/// assert_eq!(country_for_phone("351912345678"), country("PT"));
/// assert_eq!(country_for_phone("+1 416 234 5678"), country("CA"));
/// assert_eq!(country_for_phone("+1 415 555 0100"), country("US"));
/// assert_eq!(country_for_phone("not a number"), None);
/// ```
pub fn country_for_phone(phone: &str) -> Option<CountryCode> {
    let digits = international_digits(phone)?;
    let number = phonenumber::parse(None, format!("+{digits}")).ok()?;
    let region = number.country().id().into_region()?;
    let code: &str = region.as_ref();
    code.parse().ok()
}

/// The digits of `phone` in international form (without `+` or a leading `00`), or `None` when
/// it holds anything but digits and separators, or cannot be a whole E.164 number.
fn international_digits(phone: &str) -> Option<String> {
    let number = phone.split('@').next().unwrap_or_default();
    let mut digits = String::with_capacity(number.len());
    for c in number.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' | ' ' | '-' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    if digits.starts_with("00") {
        digits.replace_range(..2, "");
    }
    // E.164: at most 15 digits; anything under 8 cannot be a full international number.
    (8..=15).contains(&digits.len()).then_some(digits)
}

/// `phonenumber`'s `Country::id` answers `Option<Id>` in some 0.3 releases and
/// `Result<Option<Id>, _>` in later ones; both read the same here, so either release builds.
trait IntoRegion {
    fn into_region(self) -> Option<phonenumber::country::Id>;
}

impl IntoRegion for Option<phonenumber::country::Id> {
    fn into_region(self) -> Option<phonenumber::country::Id> {
        self
    }
}

impl<E> IntoRegion for Result<Option<phonenumber::country::Id>, E> {
    fn into_region(self) -> Option<phonenumber::country::Id> {
        self.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> CountryCode {
        s.parse().unwrap()
    }

    #[test]
    fn numbers_map_to_their_country() {
        assert_eq!(country_for_phone("5511999999999"), Some(cc("BR")));
        assert_eq!(country_for_phone("+1 415 555 0100"), Some(cc("US")));
        // libphonenumber's example UK mobile number. (`+44 7911 1...` is a Guernsey range.)
        assert_eq!(country_for_phone("447400123456"), Some(cc("GB")));
        assert_eq!(country_for_phone("351912345678"), Some(cc("PT")));
        assert_eq!(country_for_phone("34612345678"), Some(cc("ES")));
        assert_eq!(country_for_phone("5215512345678"), Some(cc("MX")));
        assert_eq!(country_for_phone("5491123456789"), Some(cc("AR")));
        assert_eq!(country_for_phone("573001234567"), Some(cc("CO")));
        assert_eq!(country_for_phone("919812345678"), Some(cc("IN")));
        assert_eq!(country_for_phone("0055 11 99999 9999"), Some(cc("BR")));
        assert_eq!(country_for_phone("5511999999999@c.us"), Some(cc("BR")));
    }

    /// The hand-written prefix table this replaced matched every `+1` to the United States and
    /// every `+7` to Russia.
    #[test]
    fn shared_calling_codes_are_told_apart() {
        assert_eq!(country_for_phone("+1 416 234 5678"), Some(cc("CA")));
        assert_eq!(country_for_phone("+1 (876) 927-1234"), Some(cc("JM")));
        assert_eq!(country_for_phone("+7 701 123 4567"), Some(cc("KZ")));
        assert_eq!(country_for_phone("77011234567@c.us"), Some(cc("KZ")));
        // The larger members keep their own numbers.
        assert_eq!(country_for_phone("+1 201 555 0123"), Some(cc("US")));
        assert_eq!(country_for_phone("+7 912 345 6789"), Some(cc("RU")));
    }

    #[test]
    fn unknown_or_malformed_numbers_have_no_country() {
        assert_eq!(country_for_phone(""), None);
        assert_eq!(country_for_phone("12345"), None);
        assert_eq!(country_for_phone("55abc9999999"), None);
        assert_eq!(country_for_phone("8881234567890"), None);
        assert_eq!(country_for_phone("1234567890123456"), None);
        // A non-geographic code (international freephone) has no country.
        assert_eq!(country_for_phone("+800 1234 5678"), None);
    }

    #[test]
    #[allow(deprecated)]
    fn table_codes_are_unique_digits() {
        let mut seen = std::collections::HashSet::new();
        for (code, _) in CALLING_CODES {
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
            assert!(seen.insert(*code), "duplicate calling code {code}");
        }
    }

    #[test]
    fn country_codes_parse_and_serialize_upper_case() {
        assert_eq!(cc("br").as_str(), "BR");
        assert_eq!(cc("BR").to_lowercase(), "br");
        assert!("BRA".parse::<CountryCode>().is_err());
        assert!("B1".parse::<CountryCode>().is_err());
        assert_eq!(serde_json::to_string(&cc("pt")).unwrap(), "\"PT\"");
        assert!(serde_json::from_str::<CountryCode>("\"xyz\"").is_err());
    }
}
