#!/usr/bin/env bash
# Runs every cargo-fuzz target of attestation/fuzz, enclave/fuzz and parent/fuzz for a
# bounded time each, seeded with the target's seeds/ directory and the repository's
# fixtures, then replays every kept regression input (<crate>/fuzz/regressions/<target>/*).
#
# A crash, leak, timeout or out-of-memory input found while fuzzing fails the run; the
# input is copied to <crate>/fuzz/regressions/<target>/ so that it is replayed from then
# on (commit it with the fix).
#
# Environment:
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_DIRS      fuzz crates to run (default: "attestation/fuzz enclave/fuzz parent/fuzz";
#                  missing ones are skipped)
#   FUZZ_TARGETS   only targets whose name matches this extended regex (default: all)
#   FUZZ_JOBS      parallel libFuzzer processes per target (-fork=N when above 1; default 1)
#   FUZZ_SANITIZER cargo-fuzz sanitizer (default address; "none" is faster)
#   FUZZ_BUILD     "release" (default: optimized, one codegen unit, the most execs/s) or
#                  "dev" (unoptimized: builds several times faster, runs slower; for a
#                  short smoke run such as CI's)
#   FUZZ_TARGET_DIR one build directory shared by every fuzz crate, so that their common
#                  dependencies (aws-lc, serde, tokio, ...) build once (default: each
#                  crate's own fuzz/target)
#
# Toolchain: `cargo +nightly fuzz` when a nightly toolchain is installed, else the stable
# toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags). cargo-fuzz is installed
# with `cargo install --locked cargo-fuzz` when missing.
set -euo pipefail

case "${BASH_SOURCE[0]}" in */*) SCRIPT_DIR="${BASH_SOURCE[0]%/*}" ;; *) SCRIPT_DIR=. ;; esac
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$REPO_ROOT"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_DIRS="${FUZZ_DIRS:-attestation/fuzz enclave/fuzz parent/fuzz}"
FUZZ_TARGETS="${FUZZ_TARGETS:-.}"
FUZZ_JOBS="${FUZZ_JOBS:-1}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-address}"
case "${FUZZ_BUILD:-release}" in
    release) build_args=(-O) ;;
    dev) build_args=(--dev) ;;
    *) echo "error: FUZZ_BUILD must be release or dev, got '${FUZZ_BUILD}'" >&2; exit 2 ;;
esac
target_dir_args=()
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
    mkdir -p "$FUZZ_TARGET_DIR"
    target_dir_args=(--target-dir "$(cd "$FUZZ_TARGET_DIR" && pwd)")
fi
FIXTURES="$REPO_ROOT/fixtures"

case "$FUZZ_SECONDS" in ''|*[!0-9]*) echo "error: FUZZ_SECONDS must be a whole number, got '$FUZZ_SECONDS'" >&2; exit 2 ;; esac

log() { printf '==> %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo-fuzz not found: cargo install --locked cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# Which toolchain: nightly if present, else stable with RUSTC_BOOTSTRAP=1.
fuzz_cmd=(cargo fuzz)
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz_cmd=(cargo +nightly fuzz)
    log "toolchain: nightly ($(cargo +nightly --version))"
else
    export RUSTC_BOOTSTRAP=1
    log "toolchain: stable with RUSTC_BOOTSTRAP=1 ($(cargo --version))"
fi

# Seeds for a target beyond its own seeds/<target>/: the fixtures its name suggests.
fixture_seeds() {
    local target="$1" out="$2"
    case "$target" in
        *cms*|*ber*|*kms*|*recipient*)
            cp "$FIXTURES"/kms-recipient/*.ber "$FIXTURES"/kms-recipient/*.der "$out"/ 2>/dev/null || true
            ;;
        *attest*|*cose*|*document*|*nsm*|*verify*|*cbor*)
            cp "$FIXTURES"/nitro-attestation/*.cose "$FIXTURES"/nitro-attestation/*.bin "$out"/ 2>/dev/null || true
            if [ -f "$FIXTURES/nitro-attestation/ev-valid.b64" ]; then
                base64 -d "$FIXTURES/nitro-attestation/ev-valid.b64" >"$out/ev-valid.bin" 2>/dev/null \
                    || rm -f "$out/ev-valid.bin"
            fi
            ;;
        *cert*|*x509*|*pem*|*chain*)
            cp "$FIXTURES"/nitro-attestation/*.pem "$out"/ 2>/dev/null || true
            ;;
    esac
}

summary=()
failures=()

# Moves whatever libFuzzer left in artifacts/<target>/ into regressions/<target>/.
keep_artifacts() {
    local dir="$1" target="$2" kept=0 f
    [ -d "$dir/artifacts/$target" ] || { echo 0; return; }
    for f in "$dir/artifacts/$target"/*; do
        [ -f "$f" ] || continue
        mkdir -p "$dir/regressions/$target"
        cp "$f" "$dir/regressions/$target/"
        kept=$((kept + 1))
    done
    echo "$kept"
}

for dir in $FUZZ_DIRS; do
    if [ ! -f "$dir/Cargo.toml" ]; then
        log "$dir: no fuzz crate here, skipped"
        continue
    fi
    mapfile -t targets < <(cd "$dir" && "${fuzz_cmd[@]}" list 2>/dev/null | { grep -E -- "$FUZZ_TARGETS" || true; })
    if [ ${#targets[@]} -eq 0 ]; then
        log "$dir: no targets (matching '$FUZZ_TARGETS')"
        continue
    fi
    log "$dir: building ${targets[*]}"
    if ! (cd "$dir" && "${fuzz_cmd[@]}" build "${build_args[@]}" --sanitizer "$FUZZ_SANITIZER" "${target_dir_args[@]}"); then
        failures+=("$dir: build failed")
        continue
    fi
    for target in "${targets[@]}"; do
        corpus="$dir/corpus/$target"
        seeds="$(mktemp -d)"
        mkdir -p "$corpus"
        [ -d "$dir/seeds/$target" ] && cp -r "$dir/seeds/$target"/. "$seeds"/
        [ -d "$dir/regressions/$target" ] && cp -r "$dir/regressions/$target"/. "$seeds"/
        fixture_seeds "$target" "$seeds"
        rm -rf "$dir/artifacts/$target"
        mkdir -p "$dir/artifacts/$target"
        run_log="$(mktemp)"
        log "$dir: fuzzing $target for ${FUZZ_SECONDS}s ($(find "$seeds" -type f | wc -l) seeds, corpus $(find "$corpus" -type f | wc -l))"
        parallel=()
        [ "$FUZZ_JOBS" -gt 1 ] && parallel=(-fork="$FUZZ_JOBS")
        status=0
        (cd "$dir" && "${fuzz_cmd[@]}" run "${build_args[@]}" --sanitizer "$FUZZ_SANITIZER" "${target_dir_args[@]}" "$target" \
            "corpus/$target" "$seeds" -- \
            -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 "${parallel[@]}") >"$run_log" 2>&1 || status=$?
        execs="$(awk '/^stat::number_of_executed_units/ {s+=$2} END {print s+0}' "$run_log")"
        rate="$(awk '/^stat::average_exec_per_sec/ {s+=$2} END {print s+0}' "$run_log")"
        cov="$(awk '{for (i = 1; i < NF; i++) if ($i == "cov:") c = $(i + 1)} END {print c}' "$run_log")"
        kept="$(keep_artifacts "$dir" "$target")"
        if [ "$status" -ne 0 ] || [ "$kept" -gt 0 ]; then
            tail -n 60 "$run_log" >&2
            failures+=("$dir/$target: exit $status, $kept input(s) kept in $dir/regressions/$target/")
            summary+=("$(printf '%-16s %-20s %12s %10s %8s  FAILED' "$dir" "$target" "$execs" "$rate" "${cov:-?}")")
        else
            summary+=("$(printf '%-16s %-20s %12s %10s %8s  ok' "$dir" "$target" "$execs" "$rate" "${cov:-?}")")
        fi
        rm -rf "$seeds" "$run_log"
    done
done

# Replay every kept regression input once (each must now pass).
for dir in $FUZZ_DIRS; do
    [ -d "$dir/regressions" ] || continue
    for rdir in "$dir"/regressions/*/; do
        [ -d "$rdir" ] || continue
        target="$(basename "$rdir")"
        mapfile -t inputs < <(find "$rdir" -type f | sort)
        [ ${#inputs[@]} -gt 0 ] || continue
        rel=()
        for f in "${inputs[@]}"; do rel+=("${f#"$dir"/}"); done
        log "$dir: replaying ${#inputs[@]} regression input(s) of $target"
        if ! (cd "$dir" && "${fuzz_cmd[@]}" run "${build_args[@]}" --sanitizer "$FUZZ_SANITIZER" "${target_dir_args[@]}" "$target" "${rel[@]}" -- -runs=1) >/dev/null 2>&1; then
            failures+=("$dir/$target: a regression input fails again (cd $dir && cargo fuzz run $target regressions/$target/<file>)")
        fi
    done
done

printf '\n%-16s %-20s %12s %10s %8s\n' "crate" "target" "execs" "execs/s" "cov"
for line in "${summary[@]}"; do printf '%s\n' "$line"; done
if [ ${#failures[@]} -gt 0 ]; then
    printf '\nFUZZING FAILED:\n' >&2
    for f in "${failures[@]}"; do printf '  %s\n' "$f" >&2; done
    exit 1
fi
printf '\nfuzzing: no crash in %ss per target\n' "$FUZZ_SECONDS"
