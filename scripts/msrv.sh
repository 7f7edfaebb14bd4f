#!/usr/bin/env bash
# Prints the highest `rust-version` declared by any package in the locked dependency tree of
# all features, i.e. the oldest toolchain the dependencies allow. The workspace's own
# `rust-version` must be at least this (and at least 1.85, for edition 2024).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --all-features --locked 2>/dev/null | python3 -c '
import json, sys
meta = json.load(sys.stdin)
ws = set(meta["workspace_members"])
resolved = {n["id"] for n in meta["resolve"]["nodes"]}
best = (0, 0, 0); who = []
for p in meta["packages"]:
    if p["id"] in ws or p["id"] not in resolved or not p.get("rust_version"):
        continue
    v = tuple(int(x) for x in (p["rust_version"].split(".") + ["0", "0"])[:3])
    if v > best: best, who = v, [p["name"]]
    elif v == best: who.append(p["name"])
print("%d.%d" % best[:2] + ("" if best[2] == 0 else ".%d" % best[2]), "(", ", ".join(sorted(who)), ")")
'
