#!/usr/bin/env bash
# Static checks of every shell script in the repository: `bash -n` and `shellcheck`
# (installed with apt-get when missing). Then the enclave binary as the image builds it:
# the release build for RUST_TARGET with ENCLAVE_RUSTFLAGS from eif/inputs.env (the
# target is added with rustup when missing; musl-gcc, from Debian's musl-tools, compiles
# the C of ring and aws-lc), the check that it is static, and the cross-check of
# agentkeys-eif against AWS's EIF code on an EIF packing it (eif/aws-crosscheck/, which
# needs a kernel: apt-get install linux-image-cloud-amd64). CHECK_SCRIPTS_SKIP_MUSL=1
# skips all of that and says so.
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) SCRIPT_DIR="${BASH_SOURCE[0]%/*}" ;; *) SCRIPT_DIR=. ;; esac
SCRIPT_DIR="$(cd "$SCRIPT_DIR" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"

if ! command -v shellcheck >/dev/null 2>&1; then
    echo "shellcheck not found: installing it with apt-get" >&2
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
    else
        echo "error: shellcheck is missing and cannot be installed here (need root and apt-get)" >&2
        exit 1
    fi
fi

# Every *.sh under scripts/ and every file there or in .ci/ whose first line names bash.
scripts=()
while IFS= read -r -d '' f; do
    scripts+=("$f")
done < <(find scripts .ci -type f \( -name '*.sh' -o -perm -u+x \) -print0 2>/dev/null | sort -z)
checked=()
for f in "${scripts[@]}"; do
    case "$f" in
        *.sh) checked+=("$f") ;;
        *) if head -n 1 "$f" | grep -q 'bash'; then checked+=("$f"); fi ;;
    esac
done
[ ${#checked[@]} -gt 0 ] || { echo "error: no scripts found" >&2; exit 1; }

failed=0
for f in "${checked[@]}"; do
    if ! bash -n "$f"; then
        echo "bash -n failed: $f" >&2
        failed=1
    fi
done
if ! shellcheck --external-sources --source-path=SCRIPTDIR "${checked[@]}"; then
    failed=1
fi
if [ "$failed" != 0 ]; then
    echo "script checks failed" >&2
    exit 1
fi
echo "bash -n and shellcheck: ${#checked[@]} scripts clean (${checked[*]})"

# The enclave binary for the EIF: built as eif/Dockerfile builds it, then checked.
if [ "${CHECK_SCRIPTS_SKIP_MUSL:-0}" = 1 ]; then
    echo "enclave binary, static check, AWS cross-check: SKIPPED (CHECK_SCRIPTS_SKIP_MUSL=1)"
    exit 0
fi
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"
read_eif_inputs eif/inputs.env >/dev/null || die "$(read_eif_inputs eif/inputs.env)"
if ! rustup target list --installed 2>/dev/null | grep -qx "$EIF_RUST_TARGET"; then
    echo "adding the $EIF_RUST_TARGET target: rustup target add $EIF_RUST_TARGET"
    rustup target add "$EIF_RUST_TARGET" || die "cannot add the $EIF_RUST_TARGET target to the toolchain (rustup target add $EIF_RUST_TARGET)"
fi
# cc-rs looks for x86_64-linux-musl-gcc; Debian's musl-tools names it musl-gcc.
cc_var="CC_$(printf '%s' "$EIF_RUST_TARGET" | tr '-' '_')"
if [ -z "${!cc_var:-}" ] && ! command -v "${EIF_RUST_TARGET%%-*}-linux-musl-gcc" >/dev/null 2>&1; then
    command -v musl-gcc >/dev/null 2>&1 || die "no C compiler for $EIF_RUST_TARGET: install musl-tools (apt-get install musl-tools) or set $cc_var"
    export "$cc_var=musl-gcc"
fi
target_dir="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
binary="$target_dir/$EIF_RUST_TARGET/release/agentkeys-enclave"
echo "enclave binary: RUSTFLAGS=\"$EIF_ENCLAVE_RUSTFLAGS\" cargo build --locked --release -p agentkeys-enclave --no-default-features --target $EIF_RUST_TARGET"
RUSTFLAGS="$EIF_ENCLAVE_RUSTFLAGS" cargo build --locked --release -p agentkeys-enclave --no-default-features --target "$EIF_RUST_TARGET"
# Static: no program interpreter, no needed shared library (the image has no libc).
if readelf -lW "$binary" | grep -q 'INTERP'; then die "$binary has a program interpreter: not static"; fi
if readelf -dW "$binary" | grep -q '(NEEDED)'; then die "$binary needs shared libraries: not static"; fi
echo "enclave binary: static (no PT_INTERP, no DT_NEEDED): $binary"

# agentkeys-eif against AWS's EIF code, on EIFs packing that binary. Its own workspace
# (see eif/aws-crosscheck/README.md), checked like the main one.
echo "AWS cross-check: cargo test --locked --manifest-path eif/aws-crosscheck/Cargo.toml"
cargo fmt --manifest-path eif/aws-crosscheck/Cargo.toml -- --check
cargo clippy --locked --manifest-path eif/aws-crosscheck/Cargo.toml --all-targets -- -D warnings
AGENTKEYS_ENCLAVE_BIN="$binary" cargo test --locked --manifest-path eif/aws-crosscheck/Cargo.toml
