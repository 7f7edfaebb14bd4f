//! Image references: a name with a tag or a digest.

use std::fmt;

use crate::Error;

/// An image by name and tag (`chipfleet/waha-sim:dev`) or by digest
/// (`devlikeapro/waha@sha256:…`). Pinning a digest makes spec drift explicit: a new digest is a
/// new spec hash, which [`rolling_replace`](crate::TenantPool::rolling_replace) rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    name: String,
    reference: Reference,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Reference {
    Tag(String),
    Digest(String),
}

impl ImageRef {
    /// An image by name and tag.
    pub fn tagged(name: impl Into<String>, tag: impl Into<String>) -> Result<Self, Error> {
        let (name, tag) = (name.into(), tag.into());
        check_name(&name)?;
        let valid_tag = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_tag {
            return Err(Error::InvalidConfig(format!("invalid image tag `{tag}`")));
        }
        Ok(Self {
            name,
            reference: Reference::Tag(tag),
        })
    }

    /// An image by name and content digest (`sha256:<64 hex>`).
    pub fn digest(name: impl Into<String>, digest: impl Into<String>) -> Result<Self, Error> {
        let (name, digest) = (name.into(), digest.into());
        check_name(&name)?;
        let valid = digest
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !valid {
            return Err(Error::InvalidConfig(format!(
                "invalid image digest `{digest}`"
            )));
        }
        Ok(Self {
            name,
            reference: Reference::Digest(digest),
        })
    }

    /// Parses `name:tag`, `name@sha256:…` or a bare `name` (tag `latest`).
    pub fn parse(text: &str) -> Result<Self, Error> {
        if let Some((name, digest)) = text.split_once('@') {
            return Self::digest(name, digest);
        }
        // A colon after the last slash separates the tag (a colon before it is a registry port).
        let last_slash = text.rfind('/').map_or(0, |i| i + 1);
        match text[last_slash..].rfind(':') {
            Some(i) => Self::tagged(&text[..last_slash + i], &text[last_slash + i + 1..]),
            None => Self::tagged(text, "latest"),
        }
    }

    /// The repository name without tag or digest.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['/', '.', '-', ':'])
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '/' | '.' | '_' | '-' | ':')
        });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!("invalid image name `{name}`")))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}:{t}", self.name),
            Reference::Digest(d) => write!(f, "{}@{d}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_digests_and_registry_ports() {
        assert_eq!(
            ImageRef::parse("chipfleet/waha-sim:dev")
                .unwrap()
                .to_string(),
            "chipfleet/waha-sim:dev"
        );
        assert_eq!(
            ImageRef::parse("devlikeapro/waha").unwrap().to_string(),
            "devlikeapro/waha:latest"
        );
        let with_port = ImageRef::parse("registry.local:5000/waha:2024.10").unwrap();
        assert_eq!(with_port.name(), "registry.local:5000/waha");
        let digest = format!("waha@sha256:{}", "a".repeat(64));
        assert_eq!(ImageRef::parse(&digest).unwrap().to_string(), digest);
        assert!(matches!(
            ImageRef::parse("waha@sha256:zz"),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            ImageRef::parse("Bad Name:x"),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            ImageRef::tagged("waha", "a b"),
            Err(Error::InvalidConfig(_))
        ));
    }
}
