#!/usr/bin/env bash
# The project's test command: builds every shipped binary (end-to-end tests start them)
# and runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# `--tests` makes this build resolve features as `cargo test` does (dev-dependencies
# included): with `--bins` alone, the test run rebuilt the AWS SDK and ~80 other crates
# with their test-time features (144 s of a fresh build on 2 cores).
cargo build --workspace --bins --tests --locked
cargo test --workspace --locked "$@"
