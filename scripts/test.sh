#!/usr/bin/env bash
# The project's one test command (README: "Tests"; CI's .ci/run calls exactly this).
#   1. scripts/test-env.sh: install and start Docker, PostgreSQL 15 and tinyproxy (idempotent)
#   2. cargo fmt --check
#   3. cargo clippy on every crate, target and feature, warnings denied
#   4. every test of every crate with all features
#   5. the README's main job (cargo run --example quickstart), so it stays working
#   6. cargo doc --no-deps, warnings denied
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() {
  printf '\n==> [%4ss] %s\n' "$((SECONDS - started))" "$*" >&2
}

step "test environment (scripts/test-env.sh)"
settings=$(scripts/test-env.sh)
# Only `export NAME=value` lines are settings; refuse anything else rather than eval it.
if printf '%s\n' "$settings" | grep -vqE '^export [A-Z_]+=[^[:space:]]*$'; then
  echo "test-env printed something other than settings on stdout:" >&2
  printf '%s\n' "$settings" | grep -vE '^export [A-Z_]+=[^[:space:]]*$' >&2
  exit 1
fi
eval "$settings"
printf '%s\n' "$settings" | sed 's/:[^:@/]*@/:***@/' >&2

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo test --workspace --all-features"
cargo test --workspace --all-features --locked

step "the main job: cargo run --example quickstart (embedded default)"
cargo run --locked --example quickstart

step "cargo doc --workspace --no-deps --all-features (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

step "all green in $((SECONDS - started)) s"
