//! A connectable proxy: scheme, host, port and optional credentials, parsed from a URL.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use crate::error::{CredentialProblem, ProxyError};
use crate::secret::ProxyPassword;

/// The protocol spoken to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProxyScheme {
    /// An HTTP proxy: `CONNECT` tunnels, Basic `Proxy-Authorization`.
    Http,
    /// A SOCKS5 proxy (RFC 1928) with optional username/password authentication (RFC 1929).
    /// Host names are always resolved by the proxy, so `socks5h://` parses to this too.
    Socks5,
}

impl ProxyScheme {
    /// The URL scheme (`http`, `socks5`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
        }
    }
}

impl fmt::Display for ProxyScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a proxy listens and how to authenticate to it.
///
/// Parse one from a URL with [`ProxyAddress::parse`]: `socks5://user:pass@host:1080`,
/// `http://user:p%40ss@10.0.0.1:3128`, `host:8080` (no scheme means `http`). Percent-encoded
/// user names and passwords are decoded, so a password containing `@`, `:` or `/` is written
/// encoded in the URL and arrives intact at the proxy.
///
/// Credentials are checked against what the scheme can carry when the address is built (see
/// [`ProxyAddress::with_credentials`], after percent-decoding): an HTTP user name may not
/// contain `:`, HTTP user names and passwords may not contain control characters, a SOCKS5
/// user name needs a password, and SOCKS5 user names and passwords are at most 255 bytes.
///
/// `Debug` prints the scheme, host, port and whether there are credentials (never the user
/// name, which on a rotating gateway carries the session id, nor the password) and `Display`
/// prints only `scheme://host:port`, so an address can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAddress {
    scheme: ProxyScheme,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<ProxyPassword>,
}

impl ProxyAddress {
    /// An address without credentials. Fails on an empty or malformed host or port 0.
    pub fn new(
        scheme: ProxyScheme,
        host: impl Into<String>,
        port: u16,
    ) -> Result<Self, ProxyError> {
        let host = host.into();
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => inner.to_owned(),
            None => host,
        };
        validate_host(&host)?;
        if port == 0 {
            return Err(ProxyError::url("port 0 is not a valid proxy port"));
        }
        Ok(Self {
            scheme,
            host,
            port,
            username: None,
            password: None,
        })
    }

    /// The same address with these credentials (already decoded: no percent-encoding here).
    ///
    /// Fails with [`ProxyError::InvalidCredentials`] when the scheme cannot carry them:
    /// - an empty user name;
    /// - HTTP: a `:` in the user name (Basic authentication sends `user:password`, so the proxy
    ///   would cut the user name at the `:`; RFC 7617), or a control character (`\r`, `\n`,
    ///   `\0`, DEL, any Unicode `Cc`) in the user name or the password, which RFC 7617 forbids
    ///   in both;
    /// - SOCKS5: a user name without a password, or with an empty one (the username/password
    ///   sub-negotiation has no "no password": PLEN is 1 to 255, RFC 1929; a proxy without
    ///   authentication takes an address without a user name), or a user name or password
    ///   over 255 bytes. SOCKS5 sends both as length-prefixed bytes, so control characters and
    ///   `:` are fine there.
    ///
    /// A `:` in a password is fine for both. The error never contains either value.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: Option<ProxyPassword>,
    ) -> Result<Self, ProxyError> {
        let username = username.into();
        if let Err(problem) = credential_problem(self.scheme, &username, password.as_ref()) {
            return Err(ProxyError::InvalidCredentials {
                proxy: self.host_port(),
                problem,
            });
        }
        self.username = Some(username);
        self.password = password;
        Ok(self)
    }

    /// Wraps a decoded password, naming the problem (never the value) when it is refused.
    fn password_from(&self, password: String) -> Result<ProxyPassword, ProxyError> {
        let problem = if has_control(&password) {
            CredentialProblem::ControlCharacterInPassword
        } else {
            CredentialProblem::PasswordTooLong
        };
        ProxyPassword::new(password).map_err(|_| ProxyError::InvalidCredentials {
            proxy: self.host_port(),
            problem,
        })
    }

    /// Parses a proxy URL. See the type docs for the accepted forms.
    ///
    /// Errors never contain the URL (it may carry a password).
    pub fn parse(url: &str) -> Result<Self, ProxyError> {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "http" => ProxyScheme::Http,
                    "socks5" | "socks5h" => ProxyScheme::Socks5,
                    "https" => {
                        return Err(ProxyError::url(
                            "https:// proxies (TLS to the proxy) are not supported; use http:// or socks5://",
                        ));
                    }
                    _ => {
                        return Err(ProxyError::url(
                            "unsupported scheme; use http:// or socks5://",
                        ));
                    }
                };
                (scheme, rest)
            }
            None => (ProxyScheme::Http, url),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !(tail.is_empty() || tail == "/") {
            return Err(ProxyError::url(
                "a proxy URL has no path, query or fragment (percent-encode '/', '?' and '#' in credentials)",
            ));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        let mut address = Self::new(scheme, host, port)?;
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user = percent_decode(user, "user name")?;
            if user.is_empty() {
                return Err(ProxyError::url("the user name before '@' is empty"));
            }
            let password = match password
                .map(|p| percent_decode(p, "password"))
                .transpose()?
            {
                // `user:@host`: an empty password is no password.
                Some(password) if password.is_empty() => None,
                Some(password) => Some(address.password_from(password)?),
                None => None,
            };
            address = address.with_credentials(user, password)?;
        }
        Ok(address)
    }

    /// The protocol spoken to the proxy.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// The host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name, decoded.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, decoded.
    pub fn password(&self) -> Option<&ProxyPassword> {
        self.password.as_ref()
    }

    /// `host:port`, with brackets around an IPv6 address. Never contains credentials.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ProxyAddress {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Scheme, host, port and whether the address carries credentials: never the user name (a
/// rotating gateway's user names carry the session id, and providers put account ids there)
/// nor the password.
impl fmt::Debug for ProxyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyAddress")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.username.is_some())
            .finish()
    }
}

impl fmt::Display for ProxyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host_port())
    }
}

/// What stops `scheme` from carrying these credentials, if anything.
fn credential_problem(
    scheme: ProxyScheme,
    username: &str,
    password: Option<&ProxyPassword>,
) -> Result<(), CredentialProblem> {
    /// RFC 1929: ULEN and PLEN are one byte each.
    const SOCKS5_MAX: usize = 255;
    if username.is_empty() {
        return Err(CredentialProblem::EmptyUserName);
    }
    let password = password.map(ProxyPassword::expose_secret);
    match scheme {
        ProxyScheme::Http => {
            if username.contains(':') {
                Err(CredentialProblem::ColonInHttpUserName)
            } else if has_control(username) {
                Err(CredentialProblem::ControlCharacterInUserName)
            } else if password.is_some_and(has_control) {
                Err(CredentialProblem::ControlCharacterInPassword)
            } else {
                Ok(())
            }
        }
        ProxyScheme::Socks5 => match password {
            _ if username.len() > SOCKS5_MAX => Err(CredentialProblem::Socks5UserNameTooLong {
                bytes: username.len(),
            }),
            None | Some("") => Err(CredentialProblem::Socks5PasswordMissing),
            Some(password) if password.len() > SOCKS5_MAX => {
                Err(CredentialProblem::Socks5PasswordTooLong)
            }
            Some(_) => Ok(()),
        },
    }
}

/// Whether `value` holds a control character: RFC 7617 forbids them (`CTL`: U+0000 to U+001F
/// and DEL) in Basic user-ids and passwords; the C1 controls (U+0080 to U+009F), which its
/// PRECIS profiles (RFC 7613) exclude as well, are refused too.
fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

fn split_host_port(hostport: &str) -> Result<(&str, u16), ProxyError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| ProxyError::url("an IPv6 host is missing its closing ']'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| ProxyError::url("the proxy port is missing (write host:port)"))?;
        (host, port)
    } else {
        hostport
            .rsplit_once(':')
            .ok_or_else(|| ProxyError::url("the proxy port is missing (write host:port)"))?
    };
    // `u16::from_str` accepts a leading '+'; a URL port is digits only.
    let port = Some(port)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| ProxyError::url("the proxy port is not a number between 1 and 65535"))?;
    Ok((host, port))
}

fn validate_host(host: &str) -> Result<(), ProxyError> {
    if host.is_empty() {
        return Err(ProxyError::url("the proxy host is empty"));
    }
    if host.contains(':') {
        return host
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| ProxyError::url("the proxy host is not a valid IPv6 address"));
    }
    if host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(ProxyError::url(
            "the proxy host may contain only letters, digits, '-', '.' and '_'",
        ));
    }
    Ok(())
}

/// Decodes `%XX` sequences; the result must be UTF-8.
pub(crate) fn percent_decode(input: &str, what: &str) -> Result<String, ProxyError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Exactly two hex digits: `u8::from_str_radix` alone would also take a sign
            // (`%+4` as 0x04).
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ProxyError::url(format!("the {what} has a malformed %-escape")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ProxyError::url(format!("the {what} is not UTF-8 once %-decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socks5_with_credentials() {
        let a = ProxyAddress::parse("socks5://user:pass@proxy.example:1080").unwrap();
        assert_eq!(a.scheme(), ProxyScheme::Socks5);
        assert_eq!(a.host(), "proxy.example");
        assert_eq!(a.port(), 1080);
        assert_eq!(a.username(), Some("user"));
        assert_eq!(a.password().unwrap().expose_secret(), "pass");
    }

    #[test]
    fn reserved_characters_in_credentials_survive_percent_decoding() {
        let a = ProxyAddress::parse("http://us%40er:p%40ss%3Aw%2Frd@10.0.0.1:3128/").unwrap();
        assert_eq!(a.username(), Some("us@er"));
        assert_eq!(a.password().unwrap().expose_secret(), "p@ss:w/rd");
        // SOCKS5 sends the user name as raw bytes: a ':' in it is fine there.
        let s = ProxyAddress::parse("socks5://us%3Aer:pw@10.0.0.1:1080").unwrap();
        assert_eq!(s.username(), Some("us:er"));
        // An unencoded '@' in the password still works: the last '@' ends the userinfo.
        let b = ProxyAddress::parse("http://user:p@ss@10.0.0.1:3128").unwrap();
        assert_eq!(b.password().unwrap().expose_secret(), "p@ss");
        // A ':' after the first one belongs to the password.
        let c = ProxyAddress::parse("http://user:a:b@10.0.0.1:3128").unwrap();
        assert_eq!(c.password().unwrap().expose_secret(), "a:b");
    }

    #[test]
    fn percent_and_reserved_characters_in_a_password_round_trip() {
        let a = ProxyAddress::parse("socks5://u:p%40ss%3Aw%2Frd%25@h:1080").unwrap();
        assert_eq!(a.password().unwrap().expose_secret(), "p@ss:w/rd%");
        // Multi-byte UTF-8, percent-encoded byte by byte.
        let b = ProxyAddress::parse("http://u:%C3%A7%C3%A3o@h:1").unwrap();
        assert_eq!(b.password().unwrap().expose_secret(), "ção");
    }

    #[test]
    fn no_scheme_means_http_and_ipv6_needs_brackets() {
        let a = ProxyAddress::parse("gw.example:823").unwrap();
        assert_eq!(a.scheme(), ProxyScheme::Http);
        assert_eq!(a.host_port(), "gw.example:823");
        let b = ProxyAddress::parse("socks5h://[::1]:1080").unwrap();
        assert_eq!(b.host(), "::1");
        assert_eq!(b.host_port(), "[::1]:1080");
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        for bad in [
            "ftp://user:hunter2@h:1",
            "https://user:hunter2@h:1",
            "http://user:hunter2@h",
            "http://user:hunter2@h:99999",
            "http://user:hunter2@h:0",
            "http://user:hunter2@:80",
            "http://user:hunter2@h:80/path",
            "http://user:hunt%zzer2@h:80",
            "http://:hunter2@h:80",
            "http://user:hunter2@h st:80",
            "http://user:hunter2@[::zz]:80",
            "http://user:hunter2@h:+80",
            "http://user:hunter2@h:",
            "http://user:hunter2@h:8%30",
            "http://user:hunter2@h:80?x=1",
            "http://user:hunter2@h:80#frag",
            "http://user:hunt%2@h:80",
            "http://user:hunter2%ff@h:80",
            "",
            "http://",
            "socks4://user:hunter2@h:1080",
        ] {
            let err = ProxyAddress::parse(bad).unwrap_err();
            assert!(matches!(err, ProxyError::InvalidProxyUrl { .. }), "{bad}");
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains("hunter2"),
                "error leaks the password: {text}"
            );
        }
    }

    #[test]
    fn a_percent_escape_is_exactly_two_hex_digits() {
        // `u8::from_str_radix` takes a leading sign: `%+4` must not decode to 0x04, nor `%-0`
        // or `% 4` to anything. Each is the typed parse error, never echoing the password.
        for escape in ["%+4", "%+F", "%-0", "%+0", "% 4", "%4 ", "%4+"] {
            for url in [
                format!("http://user:hunter2{escape}@h:80"),
                format!("http://us{escape}er:hunter2@h:80"),
            ] {
                let err = ProxyAddress::parse(&url).unwrap_err();
                let text = format!("{err} {err:?}");
                assert!(
                    matches!(&err, ProxyError::InvalidProxyUrl { reason } if reason.contains("malformed %-escape")),
                    "{escape}: {text}"
                );
                assert!(
                    !text.contains("hunter2"),
                    "error leaks the password: {text}"
                );
            }
        }
        assert!(percent_decode("%+4", "password").is_err());
        // Upper- and lower-case hex digits still decode.
        assert_eq!(percent_decode("%2a%2A%7e", "password").unwrap(), "**~");
    }

    fn credential_problem_of(err: ProxyError) -> CredentialProblem {
        match err {
            ProxyError::InvalidCredentials { problem, .. } => problem,
            other => panic!("expected InvalidCredentials, got {other:?}"),
        }
    }

    /// Parses `url`, which must be refused for its credentials: why, and the error as shown
    /// (Display and Debug).
    fn refused(url: &str) -> (CredentialProblem, String) {
        let err = ProxyAddress::parse(url).unwrap_err();
        let shown = format!("{err} {err:?}");
        (credential_problem_of(err), shown)
    }

    #[test]
    fn http_user_names_with_a_colon_are_refused() {
        // Basic authentication sends base64("user:password"): the proxy would read "acct" as
        // the user and "42:hunter2" as the password.
        let (problem, shown) = refused("http://acct%3A42:hunter2@h:3128");
        assert_eq!(problem, CredentialProblem::ColonInHttpUserName);
        assert!(shown.contains("h:3128"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("acct"),
            "{shown}"
        );
        // A ':' in the password is fine: only the first ':' separates.
        assert!(ProxyAddress::parse("http://acct:a%3Ab@h:3128").is_ok());
        let built = ProxyAddress::new(ProxyScheme::Http, "h", 3128)
            .unwrap()
            .with_credentials(
                "acct:42",
                Some(ProxyPassword::new("hunter2").expect("a valid password")),
            )
            .unwrap_err();
        assert_eq!(
            credential_problem_of(built),
            CredentialProblem::ColonInHttpUserName
        );
        let empty = ProxyAddress::new(ProxyScheme::Socks5, "h", 1080)
            .unwrap()
            .with_credentials("", None)
            .unwrap_err();
        assert_eq!(
            credential_problem_of(empty),
            CredentialProblem::EmptyUserName
        );
    }

    #[test]
    fn socks5_credentials_are_limited_to_255_bytes() {
        let at_limit = "u".repeat(255);
        let over = "u".repeat(256);
        let socks = |user: &str, password: &str| {
            ProxyAddress::parse(&format!("socks5://{user}:{password}@h:1080"))
        };
        assert!(socks(&at_limit, &at_limit).is_ok());
        assert_eq!(
            credential_problem_of(socks(&over, "pw").unwrap_err()),
            CredentialProblem::Socks5UserNameTooLong { bytes: 256 }
        );
        let err = socks("user", &format!("hunter2{over}")).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"));
        assert_eq!(
            credential_problem_of(err),
            CredentialProblem::Socks5PasswordTooLong
        );
        // Bytes, not characters: 128 two-byte characters are 256 bytes.
        let wide = "ç".repeat(128);
        assert_eq!(
            credential_problem_of(
                ProxyAddress::new(ProxyScheme::Socks5, "h", 1080)
                    .unwrap()
                    .with_credentials(wide, None)
                    .unwrap_err()
            ),
            CredentialProblem::Socks5UserNameTooLong { bytes: 256 }
        );
        // HTTP has no such limit.
        assert!(ProxyAddress::parse(&format!("http://{over}:{over}@h:3128")).is_ok());
    }

    /// RFC 7617 forbids control characters in a Basic user-id and password: a proxy may cut the
    /// value at a NUL or refuse the request, and a CR/LF pair is a line break in a header.
    /// Percent-encoding in the URL does not make them acceptable.
    #[test]
    fn http_credentials_with_control_characters_are_refused() {
        for (encoded, raw) in [
            ("%0D", "\r"),
            ("%0A", "\n"),
            ("%0D%0A", "\r\n"),
            ("%00", "\0"),
            ("%09", "\t"),
            ("%1B", "\u{1b}"),
            ("%7F", "\u{7f}"),
            ("%C2%85", "\u{85}"),
        ] {
            let (problem, shown) = refused(&format!("http://qz{encoded}vx:hunter2@h:3128"));
            assert_eq!(
                problem,
                CredentialProblem::ControlCharacterInUserName,
                "{encoded}"
            );
            assert!(shown.contains("h:3128"), "{shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("qz") && !shown.contains("vx"),
                "{shown}"
            );
            let (problem, shown) = refused(&format!("http://qzvx:hun{encoded}ter2@h:3128"));
            assert_eq!(
                problem,
                CredentialProblem::ControlCharacterInPassword,
                "{encoded}"
            );
            assert!(
                !shown.contains("hun") && !shown.contains("ter2") && !shown.contains("qzvx"),
                "{shown}"
            );
            let http = || ProxyAddress::new(ProxyScheme::Http, "h", 3128).unwrap();
            assert_eq!(
                credential_problem_of(
                    http()
                        .with_credentials(
                            format!("ac{raw}ct"),
                            Some(ProxyPassword::new("pw").expect("a valid password"))
                        )
                        .unwrap_err()
                ),
                CredentialProblem::ControlCharacterInUserName,
                "{encoded}"
            );
            // SOCKS5 sends the user name as length-prefixed bytes (RFC 1929): nothing to break
            // there. A password is never built with a control character (`ProxyPassword`).
            let socks = ProxyAddress::parse(&format!("socks5://ac{encoded}ct:pw@h:1080")).unwrap();
            assert_eq!(socks.username(), Some(format!("ac{raw}ct").as_str()));
            let (problem, _) = refused(&format!("socks5://acct:pw{encoded}@h:1080"));
            assert_eq!(
                problem,
                CredentialProblem::ControlCharacterInPassword,
                "{encoded}"
            );
            assert!(ProxyPassword::new(format!("pw{raw}")).is_err());
        }
        // Printable non-ASCII and spaces are not control characters.
        let fine = ProxyAddress::parse("http://a%20%C3%A7:p%20%C3%A3%20@h:3128").unwrap();
        assert_eq!(fine.username(), Some("a ç"));
        assert_eq!(fine.password().unwrap().expose_secret(), "p ã ");
    }

    /// RFC 1929's username/password sub-negotiation carries a password of 1 to 255 bytes; there
    /// is no "user name only". A SOCKS5 proxy without authentication takes no user name.
    #[test]
    fn socks5_user_names_need_a_password() {
        for url in ["socks5://user@h:1080", "socks5://user:@h:1080"] {
            assert_eq!(
                refused(url).0,
                CredentialProblem::Socks5PasswordMissing,
                "{url}"
            );
        }
        let socks = || ProxyAddress::new(ProxyScheme::Socks5, "h", 1080).unwrap();
        // An empty password cannot be built (`ProxyPassword` refuses it), so `None` is the case.
        assert!(ProxyPassword::new("").is_err());
        assert_eq!(
            credential_problem_of(socks().with_credentials("user", None).unwrap_err()),
            CredentialProblem::Socks5PasswordMissing
        );
        let (problem, shown) = refused("socks5://acct-42@h:1080");
        assert_eq!(problem, CredentialProblem::Socks5PasswordMissing);
        assert!(
            shown.contains("h:1080") && !shown.contains("acct"),
            "{shown}"
        );
        // No user name at all (no authentication) and a one-byte password are fine.
        assert!(
            ProxyAddress::parse("socks5://h:1080")
                .unwrap()
                .username()
                .is_none()
        );
        assert!(ProxyAddress::parse("socks5://user:p@h:1080").is_ok());
        // HTTP Basic allows an empty password.
        let http = ProxyAddress::parse("http://user@h:3128").unwrap();
        assert_eq!(http.username(), Some("user"));
        assert!(http.password().is_none());
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let a = ProxyAddress::parse("http://user:hunter2@h:80").unwrap();
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(a.to_string(), "http://h:80");
    }

    /// A rotating gateway's user name carries the session id (and often the account id), so
    /// `Debug` says only whether credentials are there.
    #[test]
    fn debug_never_shows_the_user_name() {
        let user = "brd-customer-hl_1234-zone-residential-session-k3x9q2m1zp";
        let a = ProxyAddress::parse(&format!("http://{user}:hunter2@gw.example:22225")).unwrap();
        let shown = format!("{a:?} {a:#?}");
        for secret in [user, "k3x9q2m1zp", "hl_1234", "hunter2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(
            format!("{a:?}"),
            r#"ProxyAddress { scheme: Http, host: "gw.example", port: 22225, credentials: true }"#
        );
        let socks = ProxyAddress::parse("socks5://acct-42:pw@[2001:db8::1]:1080").unwrap();
        assert!(!format!("{socks:?}").contains("acct-42"));
        let bare = ProxyAddress::parse("socks5://10.0.0.1:1080").unwrap();
        assert_eq!(
            format!("{bare:?}"),
            r#"ProxyAddress { scheme: Socks5, host: "10.0.0.1", port: 1080, credentials: false }"#
        );
    }
}
