//! A rotating residential gateway whose sticky sessions are encoded in the proxy user name.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::address::ProxyAddress;
use crate::country::CountryCode;
use crate::endpoint::{EndpointId, EndpointKind, ProxyEndpoint};
use crate::error::ProxyError;
use crate::source::ProxySource;

/// How a gateway's user name is built from the account's base user, a session id and a country.
///
/// Placeholders: `{user}` (the base user), `{session}` (required: the sticky session id),
/// `{country}` (lower-case ISO code, `br`) and `{COUNTRY}` (upper-case, `BR`). A part in square
/// brackets is optional: it is left out when a placeholder inside it has no value (a chip whose
/// country is unknown). `[`, `]`, `{` and `}` are reserved.
///
/// Typical formats of residential providers, written as templates:
///
/// | provider style | template |
/// |---|---|
/// | dash-separated keys | `user-{user}-session-{session}[-country-{country}]` |
/// | underscore-separated keys | `{user}_session-{session}[_country-{country}]` |
///
/// ```
/// use proxy_allocator::UsernameTemplate;
/// let t = UsernameTemplate::parse("user-{user}-session-{session}[-country-{country}]").unwrap();
/// assert_eq!(t.render("acme", "k3x9", Some("BR".parse().unwrap())).unwrap(),
///            "user-acme-session-k3x9-country-br");
/// assert_eq!(t.render("acme", "k3x9", None).unwrap(), "user-acme-session-k3x9");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct UsernameTemplate {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    User,
    Session,
    CountryLower,
    CountryUpper,
    Optional(Vec<Segment>),
}

impl UsernameTemplate {
    /// Parses a template. Fails on unknown placeholders, unbalanced brackets, a missing
    /// `{session}` or a `{session}` inside an optional part.
    pub fn parse(text: &str) -> Result<Self, ProxyError> {
        let mut top = Vec::new();
        let mut optional: Option<Vec<Segment>> = None;
        let mut literal = String::new();
        let mut chars = text.chars();
        let flush = |literal: &mut String, target: &mut Vec<Segment>| {
            if !literal.is_empty() {
                target.push(Segment::Literal(std::mem::take(literal)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(ProxyError::config(
                                    "'{' without '}' in the user name template",
                                ));
                            }
                        }
                    }
                    let segment = match name.as_str() {
                        "user" => Segment::User,
                        "session" => Segment::Session,
                        "country" => Segment::CountryLower,
                        "COUNTRY" => Segment::CountryUpper,
                        _ => {
                            return Err(ProxyError::config(format!(
                                "unknown placeholder {{{name}}} in the user name template \
                                 (use {{user}}, {{session}}, {{country}}, {{COUNTRY}})"
                            )));
                        }
                    };
                    let target = optional.as_mut().unwrap_or(&mut top);
                    flush(&mut literal, target);
                    target.push(segment);
                }
                '[' => {
                    if optional.is_some() {
                        return Err(ProxyError::config(
                            "optional parts of a user name template cannot nest",
                        ));
                    }
                    flush(&mut literal, &mut top);
                    optional = Some(Vec::new());
                }
                ']' => {
                    let mut inner = optional.take().ok_or_else(|| {
                        ProxyError::config("']' without '[' in the user name template")
                    })?;
                    flush(&mut literal, &mut inner);
                    if inner.contains(&Segment::Session) {
                        return Err(ProxyError::config(
                            "{session} cannot be optional in a user name template",
                        ));
                    }
                    top.push(Segment::Optional(inner));
                }
                '}' => {
                    return Err(ProxyError::config(
                        "'}' without '{' in the user name template",
                    ));
                }
                c => literal.push(c),
            }
        }
        if optional.is_some() {
            return Err(ProxyError::config(
                "'[' without ']' in the user name template",
            ));
        }
        flush(&mut literal, &mut top);
        if !top.contains(&Segment::Session) {
            return Err(ProxyError::config(
                "a user name template needs {session}: it is what keeps a chip's IP sticky",
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            segments: top,
        })
    }

    /// The template text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the template can carry a country.
    pub fn uses_country(&self) -> bool {
        fn any(segments: &[Segment]) -> bool {
            segments.iter().any(|s| match s {
                Segment::CountryLower | Segment::CountryUpper => true,
                Segment::Optional(inner) => any(inner),
                _ => false,
            })
        }
        any(&self.segments)
    }

    /// Whether a country is required (used outside an optional part).
    pub fn requires_country(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::CountryLower | Segment::CountryUpper))
    }

    /// Fills in the placeholders. Fails only when the template requires a country and none
    /// is given.
    pub fn render(
        &self,
        user: &str,
        session: &str,
        country: Option<CountryCode>,
    ) -> Result<String, ProxyError> {
        fn write(
            segments: &[Segment],
            user: &str,
            session: &str,
            country: Option<CountryCode>,
            out: &mut String,
        ) -> bool {
            for segment in segments {
                match segment {
                    Segment::Literal(text) => out.push_str(text),
                    Segment::User => out.push_str(user),
                    Segment::Session => out.push_str(session),
                    Segment::CountryLower => match country {
                        Some(c) => out.push_str(&c.to_lowercase()),
                        None => return false,
                    },
                    Segment::CountryUpper => match country {
                        Some(c) => out.push_str(c.as_str()),
                        None => return false,
                    },
                    Segment::Optional(inner) => {
                        let mut part = String::new();
                        if write(inner, user, session, country, &mut part) {
                            out.push_str(&part);
                        }
                    }
                }
            }
            true
        }
        let mut out = String::new();
        if write(&self.segments, user, session, country, &mut out) {
            Ok(out)
        } else {
            Err(ProxyError::config(
                "the user name template requires a country and the chip has none \
                 (set a default country on the gateway)",
            ))
        }
    }
}

impl fmt::Debug for UsernameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UsernameTemplate({:?})", self.text)
    }
}

/// A rotating gateway as an endpoint: one host and port, one account, a session per lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEndpoint {
    /// The gateway's host, port, scheme and account password (its user name is ignored: the
    /// template builds one per session).
    pub address: ProxyAddress,
    /// The account's base user name, for `{user}`.
    pub base_user: String,
    /// How the per-session user name is built.
    pub template: UsernameTemplate,
    /// Countries the gateway may be asked for; `None` means any (when the template carries
    /// a country).
    pub countries: Option<BTreeSet<CountryCode>>,
    /// The country used when a chip's country is unknown or not served.
    pub default_country: Option<CountryCode>,
    /// The most concurrent sessions (leases) the account allows; `None` for no limit.
    pub max_sessions: Option<u32>,
    /// Length of generated session ids (lower-case letters and digits).
    pub session_id_length: usize,
}

impl GatewayEndpoint {
    /// Whether the template can target a country per lease.
    pub fn targets_countries(&self) -> bool {
        self.template.uses_country()
    }

    /// A fresh random session id.
    pub fn new_session_id(&self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..self.session_id_length)
            .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
            .collect()
    }

    /// The connectable proxy for one session.
    ///
    /// Fails with [`ProxyError::InvalidConfig`] when the template needs a country and none is
    /// given, and with [`ProxyError::InvalidCredentials`] when the user name it renders cannot
    /// be sent (for an HTTP gateway a `:` or a control character, for SOCKS5 over 255 bytes or
    /// no password; see [`ProxyAddress::with_credentials`]); [`RotatingGatewaySource::new`]
    /// refuses such a configuration up front.
    pub fn session_address(
        &self,
        session: &str,
        country: Option<CountryCode>,
    ) -> Result<ProxyAddress, ProxyError> {
        let username = self.template.render(&self.base_user, session, country)?;
        self.address
            .clone()
            .with_credentials(username, self.address.password().cloned())
    }

    /// Renders the longest user name this gateway can produce (a session id of full length, a
    /// country in every optional part) and checks that the scheme can carry it. Every literal
    /// and placeholder of the template is in it, and a country is always two letters, so any
    /// session's user name is valid if this one is.
    fn check_user_names(&self, id: &EndpointId) -> Result<(), ProxyError> {
        let session = "x".repeat(self.session_id_length);
        let country = self
            .default_country
            .or(Some(CountryCode::from_static("US")));
        match self.session_address(&session, country) {
            Err(ProxyError::InvalidCredentials { proxy, problem }) => {
                Err(ProxyError::InvalidCredentials {
                    proxy: format!("{proxy} (gateway {id}, user name template)"),
                    problem,
                })
            }
            other => other.map(|_| ()),
        }
    }
}

/// Configuration of a [`RotatingGatewaySource`], deserializable from host configuration.
///
/// ```
/// # use proxy_allocator::RotatingGatewayConfig;
/// let config: RotatingGatewayConfig = serde_json::from_str(r#"{
///     "id": "residential",
///     "url": "http://acme:s3cret@gw.example:823",
///     "template": "user-{user}-session-{session}[-country-{country}]",
///     "countries": ["BR", "PT"]
/// }"#).unwrap();
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotatingGatewayConfig {
    /// Endpoint id.
    pub id: EndpointId,
    /// The gateway URL with the account's base user and password:
    /// `http://USER:PASSWORD@host:port` or `socks5://...`.
    #[serde(deserialize_with = "deserialize_address")]
    pub url: ProxyAddress,
    /// The user name template.
    #[serde(deserialize_with = "deserialize_template")]
    pub template: UsernameTemplate,
    /// Countries the gateway may be asked for; absent means any.
    #[serde(default)]
    pub countries: Option<BTreeSet<CountryCode>>,
    /// The country used when a chip's is unknown or not served.
    #[serde(default)]
    pub default_country: Option<CountryCode>,
    /// The most concurrent sessions the account allows.
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// Length of generated session ids; default 10.
    #[serde(default = "default_session_id_length")]
    pub session_id_length: usize,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeSet<String>,
}

fn default_session_id_length() -> usize {
    10
}

fn deserialize_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ProxyAddress, D::Error> {
    ProxyAddress::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn deserialize_template<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<UsernameTemplate, D::Error> {
    UsernameTemplate::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

impl RotatingGatewayConfig {
    /// A configuration with defaults: any country, no session limit, 10-character session ids.
    pub fn new(id: EndpointId, url: ProxyAddress, template: UsernameTemplate) -> Self {
        Self {
            id,
            url,
            template,
            countries: None,
            default_country: None,
            max_sessions: None,
            session_id_length: default_session_id_length(),
            labels: BTreeSet::new(),
        }
    }
}

/// A source offering one rotating gateway.
#[derive(Debug, Clone)]
pub struct RotatingGatewaySource {
    endpoint: Arc<[ProxyEndpoint]>,
}

impl RotatingGatewaySource {
    /// Validates the configuration: the URL must carry a base user, session ids must be 4 to 64
    /// characters, a template that requires a country needs a default country, and the user
    /// names the template renders must be sendable: no `:` and no control characters for an
    /// HTTP gateway (Basic authentication, RFC 7617), at most 255 bytes for SOCKS5 (RFC 1929),
    /// whose URL must also carry the password; otherwise [`ProxyError::InvalidCredentials`].
    pub fn new(config: RotatingGatewayConfig) -> Result<Self, ProxyError> {
        let base_user = config
            .url
            .username()
            .ok_or_else(|| {
                ProxyError::config("the gateway URL needs the account's base user (USER:PASSWORD@)")
            })?
            .to_owned();
        if !(4..=64).contains(&config.session_id_length) {
            return Err(ProxyError::config(
                "gateway session ids must be 4 to 64 characters long",
            ));
        }
        if config.template.requires_country() && config.default_country.is_none() {
            return Err(ProxyError::config(
                "the template requires a country: set default_country, or make the country \
                 part optional with [...]",
            ));
        }
        if config.max_sessions == Some(0) {
            return Err(ProxyError::config("max_sessions must be at least 1"));
        }
        let gateway = GatewayEndpoint {
            address: config.url,
            base_user,
            template: config.template,
            countries: config.countries,
            default_country: config.default_country,
            max_sessions: config.max_sessions,
            session_id_length: config.session_id_length,
        };
        gateway.check_user_names(&config.id)?;
        let country = if gateway.targets_countries() {
            None
        } else {
            gateway.default_country
        };
        Ok(Self {
            endpoint: Arc::new([ProxyEndpoint {
                id: config.id,
                country,
                labels: config.labels,
                kind: EndpointKind::Gateway(gateway),
            }]),
        })
    }
}

#[async_trait]
impl ProxySource for RotatingGatewaySource {
    async fn endpoints(&self) -> Result<Arc<[ProxyEndpoint]>, ProxyError> {
        Ok(Arc::clone(&self.endpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn br() -> Option<CountryCode> {
        Some("BR".parse().unwrap())
    }

    #[test]
    fn renders_typical_formats() {
        let dash =
            UsernameTemplate::parse("user-{user}-session-{session}[-country-{country}]").unwrap();
        assert_eq!(
            dash.render("acme", "abc123", br()).unwrap(),
            "user-acme-session-abc123-country-br"
        );
        assert_eq!(
            dash.render("acme", "abc123", None).unwrap(),
            "user-acme-session-abc123"
        );
        let underscore =
            UsernameTemplate::parse("{user}_session-{session}[_country-{COUNTRY}]").unwrap();
        assert_eq!(
            underscore.render("acme", "abc123", br()).unwrap(),
            "acme_session-abc123_country-BR"
        );
        let required = UsernameTemplate::parse("{user}-{country}-{session}").unwrap();
        assert!(required.requires_country());
        assert!(required.render("acme", "s", None).is_err());
    }

    /// The two named providers of docs/proxy-allocator.md, as written there.
    #[test]
    fn renders_the_documented_provider_formats() {
        let bright_data =
            UsernameTemplate::parse("{user}[-country-{country}]-session-{session}").unwrap();
        assert_eq!(
            bright_data
                .render("brd-customer-hl_1234-zone-residential", "k3x9q2m1zp", br())
                .unwrap(),
            "brd-customer-hl_1234-zone-residential-country-br-session-k3x9q2m1zp"
        );
        let oxylabs =
            UsernameTemplate::parse("customer-{user}[-cc-{COUNTRY}]-sessid-{session}").unwrap();
        assert_eq!(
            oxylabs.render("acme", "k3x9q2m1zp", br()).unwrap(),
            "customer-acme-cc-BR-sessid-k3x9q2m1zp"
        );
        assert_eq!(
            oxylabs.render("acme", "k3x9q2m1zp", None).unwrap(),
            "customer-acme-sessid-k3x9q2m1zp"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "{user}",
            "{user}-{sesion}",
            "{user}-[{session}]",
            "{user}-{session}[-x",
            "{user}-{session}]",
            "{user}-{session}[[-{country}]]",
            "{user}}-{session}",
            "{user}-{session",
            "{user}-{session}[-{country",
            "{user}-{session}-{}",
            "",
        ] {
            assert!(
                matches!(
                    UsernameTemplate::parse(bad),
                    Err(ProxyError::InvalidConfig { .. })
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn gateway_sessions_render_per_lease_and_keep_the_password() {
        let mut config = RotatingGatewayConfig::new(
            EndpointId::new("gw").unwrap(),
            ProxyAddress::parse("socks5://acme:p%40ss@gw.example:823").unwrap(),
            UsernameTemplate::parse("user-{user}-session-{session}[-country-{country}]").unwrap(),
        );
        config.session_id_length = 12;
        let source = RotatingGatewaySource::new(config).unwrap();
        let endpoints = source.endpoints().await.unwrap();
        let EndpointKind::Gateway(gateway) = &endpoints[0].kind else {
            panic!("a gateway source offers a gateway endpoint")
        };
        let session = gateway.new_session_id();
        assert_eq!(session.len(), 12);
        assert_ne!(session, gateway.new_session_id());
        let address = gateway.session_address(&session, br()).unwrap();
        assert_eq!(
            address.username().unwrap(),
            format!("user-acme-session-{session}-country-br")
        );
        assert_eq!(address.password().unwrap().expose_secret(), "p@ss");
        assert!(endpoints[0].serves_country("PT".parse().unwrap()));
    }

    fn invalid_credentials(result: Result<RotatingGatewaySource, ProxyError>) -> (String, String) {
        match result {
            Err(err @ ProxyError::InvalidCredentials { .. }) => {
                let shown = format!("{err} {err:?}");
                let ProxyError::InvalidCredentials { proxy, problem } = err else {
                    unreachable!()
                };
                assert!(!shown.contains("s3cret"), "{shown}");
                (proxy, problem.to_string())
            }
            other => panic!("expected InvalidCredentials, got {other:?}"),
        }
    }

    /// Renders a session of a hand-built gateway (its fields are public, so it can bypass
    /// `RotatingGatewaySource::new`) and returns the error that must refuse it.
    fn hand_built_session_error(url: &str, base_user: &str, template: &str) -> ProxyError {
        let gateway = GatewayEndpoint {
            address: ProxyAddress::parse(url).unwrap(),
            base_user: base_user.into(),
            template: UsernameTemplate::parse(template).unwrap(),
            countries: None,
            default_country: None,
            max_sessions: None,
            session_id_length: 10,
        };
        gateway
            .session_address(&gateway.new_session_id(), None)
            .unwrap_err()
    }

    /// Asserts that `err` is `InvalidCredentials` for `expected`; returns `err` as shown
    /// (Display and Debug).
    #[track_caller]
    fn assert_credential_problem(err: &ProxyError, expected: crate::CredentialProblem) -> String {
        let shown = format!("{err} {err:?}");
        assert!(
            matches!(err, ProxyError::InvalidCredentials { problem, .. } if *problem == expected),
            "expected {expected:?}: {shown}"
        );
        shown
    }

    #[test]
    fn templates_that_render_unsendable_user_names_are_refused() {
        let config = |url: &str, template: &str| {
            RotatingGatewayConfig::new(
                EndpointId::new("gw-1").unwrap(),
                ProxyAddress::parse(url).unwrap(),
                UsernameTemplate::parse(template).unwrap(),
            )
        };
        // HTTP Basic cannot carry a ':' in the user name, whether from a literal ...
        let (proxy, problem) = invalid_credentials(RotatingGatewaySource::new(config(
            "http://acme:s3cret@gw.example:823",
            "{user}:session-{session}",
        )));
        assert_eq!(proxy, "gw.example:823 (gateway gw-1, user name template)");
        assert!(problem.contains("':'"), "{problem}");
        // ... or from an optional part that only shows when the chip has a country.
        let mut with_country = config(
            "http://acme:s3cret@gw.example:823",
            "{user}-session-{session}[:cc={country}]",
        );
        with_country.countries = Some(["BR".parse().unwrap()].into());
        invalid_credentials(RotatingGatewaySource::new(with_country));
        // SOCKS5 sends raw bytes: the same template is fine there.
        RotatingGatewaySource::new(config(
            "socks5://acme:s3cret@gw.example:1080",
            "{user}:session-{session}",
        ))
        .unwrap();
        // SOCKS5 user names are at most 255 bytes, counting the longest session id.
        let long_user = "a".repeat(230);
        let url = format!("socks5://{long_user}:s3cret@gw.example:1080");
        let fits = config(&url, "{user}-{session}");
        RotatingGatewaySource::new(fits.clone()).unwrap();
        let mut too_long = fits;
        too_long.session_id_length = 64;
        let (_, problem) = invalid_credentials(RotatingGatewaySource::new(too_long));
        assert!(problem.contains("295 bytes"), "{problem}");
    }

    #[test]
    fn a_hand_built_gateway_never_renders_a_broken_proxy() {
        // `GatewayEndpoint`'s fields are public, so it can bypass `RotatingGatewaySource::new`;
        // rendering a session still refuses the user name instead of producing a proxy whose
        // Basic credentials the gateway would split at the ':'.
        let err = hand_built_session_error("http://gw.example:823", "acme", "{user}:{session}");
        assert_credential_problem(&err, crate::CredentialProblem::ColonInHttpUserName);
    }

    /// Control characters in an HTTP gateway's user name (RFC 7617) are refused wherever they
    /// come from: the template's literals, the base user, or a hand-built endpoint's fields.
    #[test]
    fn rendered_user_names_with_control_characters_are_refused() {
        for template in [
            "{user}\r\nX-Injected-1-{session}",
            "{user}-{session}[\u{0}{country}]",
        ] {
            let mut config = RotatingGatewayConfig::new(
                EndpointId::new("gw-ctl").unwrap(),
                ProxyAddress::parse("http://acme:s3cret@gw.example:823").unwrap(),
                UsernameTemplate::parse(template).unwrap(),
            );
            config.countries = Some(["BR".parse().unwrap()].into());
            let (proxy, problem) = invalid_credentials(RotatingGatewaySource::new(config));
            assert_eq!(proxy, "gw.example:823 (gateway gw-ctl, user name template)");
            assert!(
                problem.contains("control character"),
                "{template:?}: {problem}"
            );
        }
        // The base user comes from the URL, which refuses it (even percent-encoded).
        let err = ProxyAddress::parse("http://ac%0D%0Ame:s3cret@gw.example:823").unwrap_err();
        assert_credential_problem(&err, crate::CredentialProblem::ControlCharacterInUserName);
        // A hand-built endpoint (public fields) with a base user carrying CR/LF cannot render a
        // session with it.
        let err = hand_built_session_error(
            "http://acme:s3cret@gw.example:823",
            "acme\r\nX-Injected 1",
            "{user}-{session}",
        );
        let shown =
            assert_credential_problem(&err, crate::CredentialProblem::ControlCharacterInUserName);
        assert!(
            !shown.contains("Injected") && !shown.contains("s3cret"),
            "{shown}"
        );
        // SOCKS5 sends the user name as length-prefixed bytes: nothing to break there.
        RotatingGatewaySource::new(RotatingGatewayConfig::new(
            EndpointId::new("gw-socks").unwrap(),
            ProxyAddress::parse("socks5://acme:s3cret@gw.example:1080").unwrap(),
            UsernameTemplate::parse("{user}\t{session}").unwrap(),
        ))
        .unwrap();
    }

    /// A SOCKS5 gateway needs the account password: RFC 1929 sends one of 1 to 255 bytes with
    /// every user name.
    #[test]
    fn socks5_gateways_need_a_password() {
        let err = ProxyAddress::parse("socks5://acme@gw.example:1080").unwrap_err();
        assert_credential_problem(&err, crate::CredentialProblem::Socks5PasswordMissing);
        // A hand-built endpoint whose address has no password renders no session either.
        let err = hand_built_session_error("socks5://gw.example:1080", "acme", "{user}-{session}");
        assert_credential_problem(&err, crate::CredentialProblem::Socks5PasswordMissing);
    }

    #[test]
    fn validates_the_configuration() {
        let url = ProxyAddress::parse("http://gw.example:823").unwrap();
        let template = UsernameTemplate::parse("{user}-{session}").unwrap();
        let id = EndpointId::new("gw").unwrap();
        let err = RotatingGatewaySource::new(RotatingGatewayConfig::new(
            id.clone(),
            url,
            template.clone(),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("base user"));
        let needs_country = UsernameTemplate::parse("{user}-{country}-{session}").unwrap();
        let url = ProxyAddress::parse("http://a:b@gw.example:823").unwrap();
        assert!(
            RotatingGatewaySource::new(RotatingGatewayConfig::new(
                id.clone(),
                url.clone(),
                needs_country
            ))
            .is_err()
        );
        let mut short = RotatingGatewayConfig::new(id, url, template);
        short.session_id_length = 2;
        assert!(RotatingGatewaySource::new(short).is_err());
    }
}
