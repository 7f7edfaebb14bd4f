//! Builds the statically linked `waha-sim` binary with a nested cargo on its own target
//! directory (a nested cargo on the main target directory would wait forever on cargo's lock
//! while `cargo test` holds it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::SimError;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where and how the static binary is built.
#[derive(Clone, Debug)]
pub struct StaticBuild {
    workspace_root: PathBuf,
    target_dir: PathBuf,
    cargo: PathBuf,
}

impl Default for StaticBuild {
    /// The workspace this crate lives in, target directory `<workspace>/target/waha-sim-static`,
    /// and the cargo that runs the current build (`$CARGO`) or `cargo`.
    fn default() -> Self {
        let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let target_dir = workspace_root.join("target").join("waha-sim-static");
        let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
        Self {
            workspace_root,
            target_dir,
            cargo,
        }
    }
}

impl StaticBuild {
    /// Uses another target directory.
    pub fn target_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.target_dir = dir.into();
        self
    }

    /// Where the binary lands.
    pub fn binary_path(&self) -> PathBuf {
        self.target_dir
            .join(TARGET)
            .join("release")
            .join("waha-sim")
    }

    /// Runs `cargo build --release` for the binary (no features, `+crt-static`, symbols
    /// stripped), printing progress on stderr, and checks the result has no ELF interpreter.
    /// Blocking: call it from `spawn_blocking` in async code. Cheap when up to date.
    pub fn build(&self) -> Result<PathBuf, SimError> {
        eprintln!(
            "waha-sim: compiling the static binary into {} (release, +crt-static); the first \
             build takes a few minutes",
            self.target_dir.display()
        );
        let status = Command::new(&self.cargo)
            .current_dir(&self.workspace_root)
            .args(["build", "--release", "-p", "waha-sim", "--bin", "waha-sim"])
            .args(["--no-default-features", "--target", TARGET, "--target-dir"])
            .arg(&self.target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .status()
            .map_err(|e| {
                SimError::StaticBuild(format!("cannot run {}: {e}", self.cargo.display()))
            })?;
        if !status.success() {
            return Err(SimError::StaticBuild(format!("cargo exited with {status}")));
        }
        let binary = self.binary_path();
        let bytes = std::fs::read(&binary)
            .map_err(|e| SimError::StaticBuild(format!("cannot read {}: {e}", binary.display())))?;
        if !is_static_elf(&bytes) {
            return Err(SimError::StaticBuild(format!(
                "{} is not a statically linked ELF executable",
                binary.display()
            )));
        }
        eprintln!("waha-sim: static binary ready at {}", binary.display());
        Ok(binary)
    }
}

/// Whether `bytes` is a 64-bit little-endian ELF executable without a `PT_INTERP` program
/// header (i.e. it needs no dynamic loader, as a `FROM scratch` image requires).
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let read_u64 = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let Some(phoff) = read_u64(0x20).and_then(|v| usize::try_from(v).ok()) else {
        return false;
    };
    let entsize = usize::from(u16_at(0x36));
    let count = usize::from(u16_at(0x38));
    // Offsets come from the file: any overflow means it is not a (well-formed) static binary.
    (0..count).all(|i| {
        i.checked_mul(entsize)
            .and_then(|rel| phoff.checked_add(rel))
            .and_then(|at| bytes.get(at..at.checked_add(4)?))
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
            .is_some_and(|kind| kind != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_not_static() {
        let ls = std::fs::read("/bin/ls").expect("/bin/ls exists on the test machine");
        assert!(!is_static_elf(&ls));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    /// A 64-bit little-endian ELF header followed by program headers of the given types.
    fn elf(phoff: u64, entsize: u16, kinds: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0_u8; 64];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&entsize.to_le_bytes());
        let count = u16::try_from(kinds.len()).unwrap();
        bytes[0x38..0x3a].copy_from_slice(&count.to_le_bytes());
        for kind in kinds {
            let mut header = vec![0_u8; usize::from(entsize)];
            header[..4].copy_from_slice(&kind.to_le_bytes());
            bytes.extend_from_slice(&header);
        }
        bytes
    }

    #[test]
    fn crafted_headers_are_judged_by_their_program_headers() {
        const PT_LOAD: u32 = 1;
        const PT_INTERP: u32 = 3;
        assert!(is_static_elf(&elf(64, 56, &[PT_LOAD, PT_LOAD])));
        assert!(!is_static_elf(&elf(64, 56, &[PT_LOAD, PT_INTERP])));
    }

    #[test]
    fn offsets_that_overflow_are_not_static_binaries() {
        // Program header offsets at the very end of the address space: reading 4 bytes there
        // overflows.
        for phoff in [u64::MAX, u64::MAX - 1, u64::MAX - 3] {
            assert!(!is_static_elf(&elf(phoff, 56, &[1, 1])), "{phoff}");
        }
    }
}
