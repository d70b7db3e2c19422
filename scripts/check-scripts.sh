#!/usr/bin/env bash
# Static checks of every shell script in the repository: `bash -n` and `shellcheck`
# (installed with apt-get when missing). Then the musl build of agentkeys-enclave, when
# the toolchain has the x86_64-unknown-linux-musl target (it says so when it has not;
# CHECK_SCRIPTS_SKIP_MUSL=1 skips it).
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) SCRIPT_DIR="${BASH_SOURCE[0]%/*}" ;; *) SCRIPT_DIR=. ;; esac
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

# The enclave binary for the EIF is a static musl build (eif/Dockerfile).
if [ "${CHECK_SCRIPTS_SKIP_MUSL:-0}" = 1 ]; then
    echo "musl build: skipped (CHECK_SCRIPTS_SKIP_MUSL=1)"
elif command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "musl build: cargo build --locked --release -p agentkeys-enclave --target x86_64-unknown-linux-musl"
    cargo build --locked --release -p agentkeys-enclave --no-default-features --target x86_64-unknown-linux-musl
else
    echo "musl build: skipped, the toolchain has no x86_64-unknown-linux-musl target (rustup target add x86_64-unknown-linux-musl); eif/Dockerfile builds it in its Alpine builder"
fi
