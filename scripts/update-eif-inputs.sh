#!/usr/bin/env bash
# Changes the enclave image's pinned build inputs (eif/inputs.env) deliberately: rewrites
# only the values named, keeps every comment, validates the result and shows the diff.
# Commit the file afterwards: the change moves PCR0 and PCR2, and auditors rebuild from it.
#
# Usage:
#   scripts/update-eif-inputs.sh --resolve                  # re-pin the current tag
#   scripts/update-eif-inputs.sh --rust-toolchain 1.96.0 --resolve
#   scripts/update-eif-inputs.sh --digest sha256:<64 hex>   # a digest you looked up
#       [--rust-image rust:<x.y.z>-alpine] [--rust-toolchain x.y.z]
#       [--source-date-epoch N] [--apk-packages "name=version ..."]
#       [--inputs eif/inputs.env] [--dry-run]
#
# --resolve asks the registry for the digest of RUST_IMAGE (`docker buildx imagetools
# inspect`, which needs Docker with buildx and network access). --rust-toolchain X sets
# RUST_TOOLCHAIN and, unless --rust-image is given, RUST_IMAGE=rust:X-alpine. A new image
# or toolchain needs a new digest (--resolve or --digest): a digest is never kept for a
# tag it was not resolved from. --dry-run prints the diff and changes nothing.
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) SCRIPT_DIR="${BASH_SOURCE[0]%/*}" ;; *) SCRIPT_DIR=. ;; esac
SCRIPT_DIR="$(cd "$SCRIPT_DIR" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

usage() {
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

INPUTS="$REPO_ROOT/eif/inputs.env"
RESOLVE=0
DRY_RUN=0
NEW_DIGEST=""
NEW_IMAGE=""
NEW_TOOLCHAIN=""
NEW_EPOCH=""
NEW_APK=""
NEW_APK_SET=0

while [ $# -gt 0 ]; do
    case "$1" in
        --inputs) INPUTS="${2:?--inputs needs a value}"; shift 2 ;;
        --resolve) RESOLVE=1; shift ;;
        --digest) NEW_DIGEST="${2:?--digest needs a value}"; shift 2 ;;
        --rust-image) NEW_IMAGE="${2:?--rust-image needs a value}"; shift 2 ;;
        --rust-toolchain) NEW_TOOLCHAIN="${2:?--rust-toolchain needs a value}"; shift 2 ;;
        --source-date-epoch) NEW_EPOCH="${2:?--source-date-epoch needs a value}"; shift 2 ;;
        --apk-packages) NEW_APK="${2?--apk-packages needs a value}"; NEW_APK_SET=1; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

if [ "$RESOLVE" = 1 ] && [ -n "$NEW_DIGEST" ]; then
    die "--resolve and --digest exclude each other"
fi
if [ "$RESOLVE" = 0 ] && [ -z "$NEW_DIGEST" ] && [ -z "$NEW_IMAGE$NEW_TOOLCHAIN$NEW_EPOCH" ] && [ "$NEW_APK_SET" = 0 ]; then
    die "nothing to change: give --resolve, --digest, --rust-image, --rust-toolchain, --source-date-epoch or --apk-packages (see --help)"
fi

read_eif_inputs "$INPUTS" >/dev/null || die "$(read_eif_inputs "$INPUTS")"
old_image="$EIF_RUST_IMAGE"
old_toolchain="$EIF_RUST_TOOLCHAIN"

if [ -n "$NEW_TOOLCHAIN" ]; then
    [[ "$NEW_TOOLCHAIN" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--rust-toolchain '$NEW_TOOLCHAIN' is not an exact version (e.g. 1.95.0)"
    EIF_RUST_TOOLCHAIN="$NEW_TOOLCHAIN"
    EIF_RUST_IMAGE="${NEW_IMAGE:-rust:$NEW_TOOLCHAIN-alpine}"
elif [ -n "$NEW_IMAGE" ]; then
    EIF_RUST_IMAGE="$NEW_IMAGE"
fi
case "$EIF_RUST_IMAGE" in
    *@*) die "--rust-image '$EIF_RUST_IMAGE' has a digest; give the tag, and the digest with --digest or --resolve" ;;
esac
if [ "$EIF_RUST_IMAGE" != "$old_image" ] || [ "$EIF_RUST_TOOLCHAIN" != "$old_toolchain" ]; then
    if [ "$RESOLVE" = 0 ] && [ -z "$NEW_DIGEST" ]; then
        die "the builder image changes ($old_image -> $EIF_RUST_IMAGE, rustc $old_toolchain -> $EIF_RUST_TOOLCHAIN): give its digest with --resolve or --digest"
    fi
fi

if [ -n "$NEW_DIGEST" ]; then
    [[ "$NEW_DIGEST" =~ ^sha256:[0-9a-f]{64}$ ]] || die "--digest '$NEW_DIGEST' is not sha256:<64 lower-case hex>"
    [ "$NEW_DIGEST" != "$EIF_PLACEHOLDER_DIGEST" ] || die "--digest: the all-zero digest is the placeholder, not an image"
    EIF_RUST_IMAGE_DIGEST="$NEW_DIGEST"
fi
if [ "$RESOLVE" = 1 ]; then
    command -v docker >/dev/null 2>&1 \
        || die "--resolve needs docker (with buildx) to ask the registry; on a host without it, look the digest up elsewhere (docker buildx imagetools inspect $EIF_RUST_IMAGE) and pass --digest"
    docker buildx version >/dev/null 2>&1 \
        || die "--resolve needs the docker buildx plugin (docker buildx imagetools inspect); or pass --digest"
    info "docker buildx imagetools inspect $EIF_RUST_IMAGE"
    inspected="$(docker buildx imagetools inspect "$EIF_RUST_IMAGE")" \
        || die "could not resolve $EIF_RUST_IMAGE (does the tag exist, and can this host reach the registry?)"
    # The first "Digest:" line is that of the tag's manifest list (the multi-platform index).
    resolved="$(printf '%s\n' "$inspected" | sed -n 's/^Digest:[[:space:]]*\(sha256:[0-9a-f]\{64\}\)[[:space:]]*$/\1/p' | head -n 1)"
    [ -n "$resolved" ] || die "docker buildx imagetools inspect printed no Digest line for $EIF_RUST_IMAGE"
    EIF_RUST_IMAGE_DIGEST="$resolved"
fi
if [ -n "$NEW_EPOCH" ]; then
    EIF_SOURCE_DATE_EPOCH="$NEW_EPOCH"
fi
if [ "$NEW_APK_SET" = 1 ]; then
    EIF_APK_PACKAGES="$NEW_APK"
fi

if ! reason="$(validate_eif_inputs "$REPO_ROOT")"; then
    die "$reason"
fi

# Rewrite each KEY= line in place; comments and order stay. Values with a space are quoted.
new="$(mktemp "$INPUTS.XXXXXX")"
trap 'rm -f "$new"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
    key=""
    if [[ "$line" =~ ^([A-Z_]+)= ]]; then key="${BASH_REMATCH[1]}"; fi
    if [ -n "$key" ]; then
        var="EIF_$key"
        value="${!var}"
        case "$value" in
            *[[:space:]]* | "") printf '%s="%s"\n' "$key" "$value" ;;
            *) printf '%s=%s\n' "$key" "$value" ;;
        esac
    else
        printf '%s\n' "$line"
    fi
done <"$INPUTS" >"$new"

# The rewritten file must read back to exactly the values just validated.
expected=()
for k in "${EIF_INPUT_KEYS[@]}"; do var="EIF_$k"; expected+=("${!var}"); done
read_eif_inputs "$new" >/dev/null || die "the rewritten file does not read back: $(read_eif_inputs "$new")"
i=0
for k in "${EIF_INPUT_KEYS[@]}"; do
    var="EIF_$k"
    [ "${!var}" = "${expected[$i]}" ] || die "the rewritten file reads $k back as '${!var}', not '${expected[$i]}'"
    i=$((i + 1))
done

if cmp -s "$INPUTS" "$new"; then
    info "$INPUTS already holds these values: nothing changed"
    exit 0
fi
diff -u "$INPUTS" "$new" || true
if [ "$DRY_RUN" = 1 ]; then
    info "dry run: $INPUTS is unchanged"
    exit 0
fi
chmod --reference="$INPUTS" "$new" 2>/dev/null || true
mv "$new" "$INPUTS"
trap - EXIT
info "updated $INPUTS: commit it (git commit -- eif/inputs.env); the next build's PCR0 and PCR2 change"
