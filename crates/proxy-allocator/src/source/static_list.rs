//! A fixed list of proxies, from configuration or a file.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::address::ProxyAddress;
use crate::country::CountryCode;
use crate::endpoint::{EndpointId, EndpointKind, ProxyEndpoint};
use crate::error::ProxyError;
use crate::source::{ProxySource, check_unique_ids};

/// One entry of a static list, as it appears in host configuration.
///
/// Deserializes from `{"url": "socks5://user:pass@host:1080", "country": "BR",
/// "labels": ["mobile"], "id": "br-1"}`; only `url` is required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawEntry")]
pub struct StaticProxyEntry {
    /// Stable id; defaults to [`StaticProxyEntry::default_id`] (`scheme://host:port`, plus
    /// `#` and a hash when the URL has a user name), which never contains the user name.
    pub id: EndpointId,
    /// The proxy.
    pub address: ProxyAddress,
    /// Where its traffic leaves from, when known.
    pub country: Option<CountryCode>,
    /// Labels a request may require.
    pub labels: BTreeSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    url: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    country: Option<CountryCode>,
    #[serde(default)]
    labels: BTreeSet<String>,
}

impl TryFrom<RawEntry> for StaticProxyEntry {
    type Error = ProxyError;

    fn try_from(raw: RawEntry) -> Result<Self, Self::Error> {
        let address = ProxyAddress::parse(&raw.url)?;
        // With an explicit id the default one is never computed: it may not fit an id.
        let mut entry = match raw.id {
            Some(id) => StaticProxyEntry::named(EndpointId::new(id)?, address),
            None => StaticProxyEntry::new(address)?,
        };
        entry.country = raw.country;
        entry.labels = raw.labels;
        Ok(entry)
    }
}

impl StaticProxyEntry {
    /// An entry with the default id ([`StaticProxyEntry::default_id`]), no country and no
    /// labels. Fails when the default id does not fit an [`EndpointId`] (a host name near the
    /// 253-character limit); use [`StaticProxyEntry::named`] for such a proxy.
    pub fn new(address: ProxyAddress) -> Result<Self, ProxyError> {
        Ok(Self::named(Self::default_id(&address)?, address))
    }

    /// An entry with this id, no country and no labels. The default id is not computed, so this
    /// works for every address, including one whose default id would be too long.
    pub fn named(id: EndpointId, address: ProxyAddress) -> Self {
        Self {
            id,
            address,
            country: None,
            labels: BTreeSet::new(),
        }
    }

    /// The id an entry gets unless one is given: `scheme://host:port` (`http://203.0.113.7:3128`,
    /// `socks5://[2001:db8::1]:1080`), and for a URL with a user name `#` and the first 12 hex
    /// digits of a SHA-256 over the scheme, host, port and user name
    /// (`socks5://acct-42:…@203.0.113.7:1080` → `socks5://203.0.113.7:1080#1d88ea64fef0`).
    ///
    /// The user name itself never appears: on rotating gateways and many paid proxies it carries
    /// account identifiers, and ids are logged, shown in errors and stored with every lease. The
    /// hash keeps two accounts on one `host:port` apart. It depends on nothing else (not the
    /// password, so changing a password keeps the id and the chips on it; not the other entries,
    /// so adding one does not rename another), which makes it stable across restarts with the
    /// same configuration. It hides the user name from view but is not a secret: a user name
    /// that can be guessed can be confirmed against it.
    ///
    /// Fails with [`ProxyError::InvalidConfig`] when the id would be longer than the 200
    /// characters an [`EndpointId`] may have (a host name near its 253-character limit): give
    /// such an entry an explicit id ([`StaticProxyEntry::named`], `id=` in the line format,
    /// `"id"` in configuration).
    pub fn default_id(address: &ProxyAddress) -> Result<EndpointId, ProxyError> {
        let base = format!("{}://{}", address.scheme(), address.host_port());
        let to_id = |id: String| {
            EndpointId::new(id).map_err(|_| {
                ProxyError::config(format!(
                    "the default id of {} would be longer than the 200 characters an endpoint \
                     id may have; give the entry an explicit id (id=NAME)",
                    address.host_port()
                ))
            })
        };
        let Some(user) = address.username() else {
            return to_id(base);
        };
        let mut hash = Sha256::new();
        for field in [
            "proxy-allocator static entry v1",
            address.scheme().as_str(),
            address.host(),
            &address.port().to_string(),
            user,
        ] {
            // Length-prefixed, so that no two field lists hash the same bytes.
            hash.update((field.len() as u64).to_be_bytes());
            hash.update(field.as_bytes());
        }
        let digest = hash.finalize();
        let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        to_id(format!("{base}#{tag}"))
    }

    /// Parses a proxy URL into an entry with the default id.
    pub fn from_url(url: &str) -> Result<Self, ProxyError> {
        Self::new(ProxyAddress::parse(url)?)
    }

    /// Sets the id.
    pub fn with_id(mut self, id: EndpointId) -> Self {
        self.id = id;
        self
    }

    /// Sets the country.
    pub fn with_country(mut self, country: CountryCode) -> Self {
        self.country = Some(country);
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.labels.insert(label.into());
        self
    }

    fn to_endpoint(&self) -> ProxyEndpoint {
        ProxyEndpoint {
            id: self.id.clone(),
            country: self.country,
            labels: self.labels.clone(),
            kind: EndpointKind::Fixed(self.address.clone()),
        }
    }
}

/// A fixed list of proxies.
///
/// Build it from entries, or parse the line format with [`StaticListSource::parse`]:
///
/// ```text
/// # one proxy per line; '#' starts a comment
/// socks5://user:p%40ss@203.0.113.7:1080  country=BR  labels=mobile,premium  id=br-1
/// http://10.0.0.2:3128                   country=US
/// ```
///
/// Tokens after the URL are `country=CC`, `labels=a,b` (or repeated `label=a`) and `id=NAME`.
#[derive(Debug, Clone)]
pub struct StaticListSource {
    endpoints: Arc<[ProxyEndpoint]>,
}

impl StaticListSource {
    /// A source from entries. Fails if two entries share an id.
    pub fn new(entries: impl IntoIterator<Item = StaticProxyEntry>) -> Result<Self, ProxyError> {
        let endpoints: Vec<_> = entries.into_iter().map(|e| e.to_endpoint()).collect();
        check_unique_ids(&endpoints)?;
        Ok(Self {
            endpoints: endpoints.into(),
        })
    }

    /// Parses the line format (see the type docs). Errors name the line number, never its URL.
    pub fn parse(text: &str) -> Result<Self, ProxyError> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = strip_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            let entry = parse_line(line).map_err(|err| match err {
                ProxyError::InvalidProxyUrl { reason } => ProxyError::InvalidProxyUrl {
                    reason: format!("line {}: {reason}", index + 1),
                },
                ProxyError::InvalidConfig { reason } => ProxyError::InvalidConfig {
                    reason: format!("line {}: {reason}", index + 1),
                },
                ProxyError::InvalidCredentials { proxy, problem } => {
                    ProxyError::InvalidCredentials {
                        proxy: format!("{proxy} (line {})", index + 1),
                        problem,
                    }
                }
                other => other,
            })?;
            entries.push(entry);
        }
        Self::new(entries)
    }

    /// Reads and parses a file in the line format.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self, ProxyError> {
        let path = path.as_ref();
        let text =
            tokio::fs::read_to_string(path)
                .await
                .map_err(|source| ProxyError::SourceFile {
                    path: path.display().to_string(),
                    source,
                })?;
        Self::parse(&text)
    }
}

/// The line without its comment: `#` at the start or after whitespace. A `#` inside a URL is
/// left for the URL parser, which asks for it to be percent-encoded, rather than silently
/// cutting a password short.
fn strip_comment(line: &str) -> &str {
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        if c == '#' && previous.is_whitespace() {
            return &line[..index];
        }
        previous = c;
    }
    line
}

fn parse_line(line: &str) -> Result<StaticProxyEntry, ProxyError> {
    let mut tokens = line.split_whitespace();
    let address = ProxyAddress::parse(tokens.next().unwrap_or_default())?;
    let (mut id, mut country, mut labels) = (None, None, BTreeSet::new());
    for token in tokens {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| ProxyError::config("expected key=value after the URL"))?;
        match key {
            "country" => country = Some(value.parse()?),
            "id" => id = Some(EndpointId::new(value)?),
            "label" | "labels" => labels.extend(
                value
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            ),
            _ => {
                return Err(ProxyError::config(
                    "unknown key after the URL (use country=, labels=, id=)",
                ));
            }
        }
    }
    // With an explicit id the default one is never computed: it may not fit an id.
    let mut entry = match id {
        Some(id) => StaticProxyEntry::named(id, address),
        None => StaticProxyEntry::new(address)?,
    };
    entry.country = country;
    entry.labels = labels;
    Ok(entry)
}

#[async_trait]
impl ProxySource for StaticListSource {
    async fn endpoints(&self) -> Result<Arc<[ProxyEndpoint]>, ProxyError> {
        Ok(Arc::clone(&self.endpoints))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_the_line_format() {
        let source = StaticListSource::parse(
            "# fleet\n\
             socks5://u:p%2Fw@203.0.113.7:1080 country=br labels=mobile,premium id=br-1\n\
             \n\
             http://10.0.0.2:3128   # no credentials\n\
             http://u2:x@10.0.0.3:3128 label=a label=b\n",
        )
        .unwrap();
        let endpoints = source.endpoints().await.unwrap();
        assert_eq!(endpoints.len(), 3);
        assert_eq!(endpoints[0].id.as_str(), "br-1");
        assert_eq!(endpoints[0].country, Some("BR".parse().unwrap()));
        assert_eq!(endpoints[0].labels.len(), 2);
        let EndpointKind::Fixed(address) = &endpoints[0].kind else {
            panic!("static entries are fixed endpoints")
        };
        assert_eq!(address.password().unwrap().expose_secret(), "p/w");
        assert_eq!(endpoints[1].id.as_str(), "http://10.0.0.2:3128");
        assert!(
            endpoints[2]
                .id
                .as_str()
                .starts_with("http://10.0.0.3:3128#"),
            "{:?}",
            endpoints[2].id
        );
        assert_eq!(endpoints[2].labels.len(), 2);
    }

    #[test]
    fn default_ids_never_contain_the_user_name() {
        // Rotating gateways and many paid proxies put account identifiers in the user name.
        let user = "brd-customer-hl_1234-zone-residential";
        let entry =
            StaticProxyEntry::from_url(&format!("http://{user}:s3cret@203.0.113.7:3128")).unwrap();
        let id = entry.id.as_str();
        assert!(!id.contains("brd") && !id.contains("hl_1234"), "{id}");
        assert!(!id.contains("s3cret"), "{id}");
        let (base, tag) = id.split_once('#').expect("a user name adds a tag");
        assert_eq!(base, "http://203.0.113.7:3128");
        assert_eq!(tag.len(), 12);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()), "{tag}");
        let no_user = StaticProxyEntry::from_url("socks5://[2001:db8::1]:1080").unwrap();
        assert_eq!(no_user.id.as_str(), "socks5://[2001:db8::1]:1080");
    }

    /// Ids are stored with every lease: the same configuration must give the same ids in every
    /// process and every version, or chips lose their proxy on restart or upgrade. This pins
    /// the format; changing it moves every chip of every existing deployment.
    #[test]
    fn default_ids_are_deterministic_and_pinned() {
        let url = "socks5://acct-42:s3cret@203.0.113.7:1080";
        let id = StaticProxyEntry::from_url(url).unwrap().id;
        assert_eq!(id, StaticProxyEntry::from_url(url).unwrap().id);
        assert_eq!(id.as_str(), "socks5://203.0.113.7:1080#1d88ea64fef0");
        // The password is not part of it: a password change keeps the chips where they are.
        let new_password = StaticProxyEntry::from_url("socks5://acct-42:rotated@203.0.113.7:1080")
            .unwrap()
            .id;
        assert_eq!(new_password, id);
        // Scheme, host, port and user name each change it.
        for other in [
            "http://acct-42:s3cret@203.0.113.7:1080",
            "socks5://acct-42:s3cret@203.0.113.8:1080",
            "socks5://acct-42:s3cret@203.0.113.7:1081",
            "socks5://acct-43:s3cret@203.0.113.7:1080",
            "socks5://203.0.113.7:1080",
        ] {
            assert_ne!(StaticProxyEntry::from_url(other).unwrap().id, id, "{other}");
        }
    }

    #[tokio::test]
    async fn two_accounts_on_one_host_port_get_distinct_ids() {
        let source = StaticListSource::parse(
            "http://account-a:x@gw.example:8000
             http://account-b:y@gw.example:8000
             http://gw.example:8000
",
        )
        .unwrap();
        let ids: BTreeSet<String> = source
            .endpoints()
            .await
            .unwrap()
            .iter()
            .map(|e| e.id.to_string())
            .collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(ids.iter().all(|id| !id.contains("account")), "{ids:?}");
        // The same account twice (whatever the passwords) is one proxy listed twice.
        let err = StaticListSource::parse(
            "http://account-a:x@gw.example:8000
http://account-a:z@gw.example:8000
",
        )
        .unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
        assert!(!err.to_string().contains("account-a"), "{err}");
    }

    #[test]
    fn unsendable_credentials_are_refused_with_the_line_number() {
        let err = StaticListSource::parse(
            "http://h:1
http://acct%3A42:hunter2@h:3128
",
        )
        .unwrap_err();
        let shown = format!("{err} {err:?}");
        let ProxyError::InvalidCredentials { proxy, problem } = err else {
            panic!("expected InvalidCredentials, got {shown}");
        };
        assert_eq!(proxy, "h:3128 (line 2)");
        assert_eq!(problem, crate::CredentialProblem::ColonInHttpUserName);
        assert!(
            !shown.contains("hunter2") && !shown.contains("acct"),
            "{shown}"
        );
        let err = serde_json::from_str::<StaticProxyEntry>(&format!(
            r#"{{"url": "socks5://{}:hunter2@h:1080"}}"#,
            "u".repeat(256)
        ))
        .unwrap_err();
        assert!(err.to_string().contains("255"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// RFC 7617 forbids control characters in HTTP Basic credentials. The line format splits
    /// on whitespace (so a raw CR or LF ends the token), but percent-encoded ones and raw NUL
    /// or DEL reach the URL parser, which refuses them with the line number.
    #[test]
    fn control_characters_in_http_credentials_are_refused() {
        for (text, problem) in [
            (
                "http://h:1\nhttp://u:hun%0D%0Ater2@h:3128 id=x",
                crate::CredentialProblem::ControlCharacterInPassword,
            ),
            (
                "http://h:1\nhttp://u:hun\u{0}ter2@h:3128",
                crate::CredentialProblem::ControlCharacterInPassword,
            ),
            (
                "http://h:1\nhttp://qz\u{7f}vx:hunter2@h:3128",
                crate::CredentialProblem::ControlCharacterInUserName,
            ),
            (
                "http://h:1\nhttp://qz%0Avx:hunter2@h:3128",
                crate::CredentialProblem::ControlCharacterInUserName,
            ),
        ] {
            let err = StaticListSource::parse(text).unwrap_err();
            let shown = format!("{err} {err:?}");
            let ProxyError::InvalidCredentials {
                proxy,
                problem: got,
            } = err
            else {
                panic!("expected InvalidCredentials, got {shown}");
            };
            assert_eq!(proxy, "h:3128 (line 2)", "{text:?}");
            assert_eq!(got, problem, "{text:?}");
            for secret in ["hun", "ter2", "qz", "vx"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
        for url in [
            r#"{"url": "http://u:hun\r\nter2@h:3128"}"#,
            r#"{"url": "http://u:hun%0D%0Ater2@h:3128", "id": "x"}"#,
            r#"{"url": "http://qz\u0000vx:hunter2@h:3128"}"#,
        ] {
            let err = serde_json::from_str::<StaticProxyEntry>(url).unwrap_err();
            assert!(err.to_string().contains("control character"), "{err}");
            for secret in ["hun", "ter2", "qz", "vx"] {
                assert!(!err.to_string().contains(secret), "{err}");
            }
        }
    }

    /// A SOCKS5 user name needs a password (RFC 1929 has no empty password); refused in the line
    /// format and in configuration.
    #[test]
    fn socks5_user_names_without_a_password_are_refused() {
        let err = StaticListSource::parse("socks5://acct-42@h:1080 id=s").unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            matches!(
                err,
                ProxyError::InvalidCredentials {
                    problem: crate::CredentialProblem::Socks5PasswordMissing,
                    ..
                }
            ),
            "{shown}"
        );
        assert!(
            shown.contains("line 1") && !shown.contains("acct"),
            "{shown}"
        );
        let err =
            serde_json::from_str::<StaticProxyEntry>(r#"{"url": "socks5://acct-42:@h:1080"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("needs a password"), "{err}");
    }

    /// A host name may be 253 characters; `scheme://host:port` then exceeds the 200 characters
    /// of an endpoint id. An explicit id must be enough to use such a proxy: the default id is
    /// never computed when one is given.
    #[tokio::test]
    async fn an_explicit_id_needs_no_default_id() {
        let label = "a".repeat(63);
        let host = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(host.len(), 253);
        let url = format!("http://acct:s3cret@{host}:3128");
        let source = StaticListSource::parse(&format!("{url} id=long-1 country=BR")).unwrap();
        let endpoints = source.endpoints().await.unwrap();
        assert_eq!(endpoints[0].id.as_str(), "long-1");
        assert_eq!(endpoints[0].host_port(), format!("{host}:3128"));
        assert_eq!(endpoints[0].country, Some("BR".parse().unwrap()));
        let entry: StaticProxyEntry =
            serde_json::from_str(&format!(r#"{{"url": "{url}", "id": "long-2"}}"#)).unwrap();
        assert_eq!(entry.id.as_str(), "long-2");
        let named = StaticProxyEntry::named(
            EndpointId::new("long-3").unwrap(),
            ProxyAddress::parse(&url).unwrap(),
        );
        assert_eq!(named.address.host(), host);

        // Without one, the error says what to do.
        let err = StaticListSource::parse(&format!("http://h:1\n{url}")).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProxyError::InvalidConfig { .. }), "{err:?}");
        assert!(
            text.contains("line 2") && text.contains("explicit id"),
            "{text}"
        );
        assert!(!text.contains("s3cret") && !text.contains("acct"), "{text}");
        assert!(
            serde_json::from_str::<StaticProxyEntry>(&format!(r#"{{"url": "{url}"}}"#)).is_err()
        );
        // A host whose `scheme://host:port` fits but whose `#tag` for the user name does not.
        let mid = format!("http://acct:s3cret@{}:3128", "c".repeat(185));
        assert!(StaticProxyEntry::from_url(&mid.replace("acct:s3cret@", "")).is_ok());
        assert!(StaticProxyEntry::from_url(&mid).is_err());
        assert!(StaticListSource::parse(&format!("{mid} id=mid")).is_ok());
    }

    #[test]
    fn errors_name_the_line_and_hide_the_url() {
        let err = StaticListSource::parse("http://a:1\nhttp://u:hunter2@h\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains("hunter2"));
        let err = StaticListSource::parse("http://u:hunter2@h:1 colour=red").unwrap_err();
        assert!(matches!(err, ProxyError::InvalidConfig { .. }));
        let err = StaticListSource::parse("http://h:1\nhttp://h:1").unwrap_err();
        assert!(err.to_string().contains("more than once"));
    }

    #[test]
    fn bad_entries_get_typed_errors_naming_the_line() {
        for (text, line) in [
            ("http://u:hunter2@h:1 country=BRA", 1),
            ("http://h:1\n  http://u:hunter2@h:1 id=", 2),
            ("http://u:hunter2@h:1 id=a\u{0}b", 1),
            ("# header\nhttp://u:hunter2@:1", 2),
            ("http://u:hunter2@h:0", 1),
            ("gopher://u:hunter2@h:1", 1),
            ("http://u:hunter2@h:1 =x", 1),
            // A raw '#' inside a password is not taken for a comment that would cut the URL.
            ("http://u:hunt#er2@h:1", 1),
        ] {
            let err = StaticListSource::parse(text).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProxyError::InvalidProxyUrl { .. } | ProxyError::InvalidConfig { .. }
                ),
                "{text}: {err:?}"
            );
            let shown = format!("{err} {err:?}");
            assert!(shown.contains(&format!("line {line}")), "{text}: {shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("hunt#er2"),
                "{shown}"
            );
        }
        let err = StaticListSource::parse("http://u:hunt#er2@h:1").unwrap_err();
        assert!(err.to_string().contains("percent-encode"), "{err}");
    }

    #[test]
    fn deserializes_entries_from_config() {
        let entries: Vec<StaticProxyEntry> = serde_json::from_str(
            r#"[{"url": "socks5://u:s3cret@h:1080", "country": "PT", "labels": ["x"]},
                {"url": "http://h:3128", "id": "dc-1"}]"#,
        )
        .unwrap();
        assert_eq!(entries[0].country, Some("PT".parse().unwrap()));
        assert_eq!(entries[1].id.as_str(), "dc-1");
        let err = serde_json::from_str::<StaticProxyEntry>(r#"{"url": "http://u:s3cret@h"}"#)
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
        assert!(!format!("{entries:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn missing_file_is_a_typed_error() {
        let err = StaticListSource::from_file("/nonexistent/proxies.txt")
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::SourceFile { .. }));
    }
}
