#!/usr/bin/env bash
# The project's test command: builds every shipped binary (end-to-end tests start them)
# and runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
