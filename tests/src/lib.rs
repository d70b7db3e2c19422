//! Helpers for end-to-end tests: build and start the shipped binaries.
