//! The spec hash stored in every container's labels.

use sha2::{Digest, Sha256};

use super::{ContainerSpec, EnvValue};
use crate::labels;

impl ContainerSpec {
    /// A stable hash of everything that requires re-creating the container when it changes:
    /// image, plain environment, secret variable *names* (not values), limits, volume, addressing
    /// mode, port and restart policy. Labels are included except the hash label itself, the
    /// key-fingerprint label (a key rotation is not spec drift: `ensure` handles it) and the
    /// incarnation label (a container of another incarnation is not drifted but foreign:
    /// `ensure` replaces it). 16 hex characters.
    pub fn spec_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |k: &str, v: &str| {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0xff]);
        };
        field("image", &self.image.to_string());
        let mut env: Vec<_> = self.env.iter().collect();
        env.sort_by(|a, b| a.name.cmp(&b.name));
        for e in env {
            match &e.value {
                EnvValue::Plain(v) => field(&format!("env:{}", e.name), v),
                EnvValue::Secret(_) | EnvValue::ApiKey(_) => {
                    field(&format!("secret:{}", e.name), "")
                }
            }
        }
        for (k, v) in &self.labels {
            if k != labels::SPEC_HASH && k != labels::KEY_FINGERPRINT && k != labels::INCARNATION {
                field(&format!("label:{k}"), v);
            }
        }
        field("memory", &self.resources.memory_bytes.to_string());
        field("nano_cpus", &self.resources.nano_cpus.to_string());
        field("pids", &self.resources.pids_limit.to_string());
        if let Some(v) = &self.volume {
            field("volume", &format!("{}:{}", v.name, v.target));
        }
        field("addressing", &self.addressing.label_value());
        field("port", &self.container_port.to_string());
        field("restart", &format!("{:?}", self.restart));
        hex::encode(&h.finalize()[..8])
    }
}
