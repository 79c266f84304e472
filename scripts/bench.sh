#!/usr/bin/env bash
# Runs the criterion benchmarks of benches/ and prints a Markdown table of ratios.
#
#   bash scripts/bench.sh                 # every bench, full run (a few minutes)
#   bash scripts/bench.sh --smoke         # every bench, tiny samples (CI: proves none rotted)
#   bash scripts/bench.sh latency memory  # only these benches
#
# The jobrun_* benches measure the task runner: jobrun_core its scheduling core in-process;
# jobrun_makespan and jobrun_overhead the `jobrun` binary against ninja, make and xargs with
# real processes (they run `cargo build --release -p jobrun` themselves, or use $JOBRUN).
#
# Each bench measures ours and a reference in the same run, interleaved (this machine's
# absolute times drift between runs; paired ratios do not), and writes its figures to
# target/bench-results/<bench>.tsv. This script runs the benches one after another, keeps
# each one's criterion output in target/bench-results/<bench>.log, and assembles the TSV files
# into target/bench-results/table.md, which it also prints. A missed target is reported in the
# table, not as a failure; the script fails only when a bench fails to build or run.
set -euo pipefail
cd "$(dirname "$0")/.."

all=(pipe_ops implicit_slot contention wakeups latency memory processes jobrun_core jobrun_makespan jobrun_overhead)

usage() {
    sed -n '2,19s/^# \{0,1\}//p' "$0"
    echo "benches: ${all[*]}"
}

smoke=0
benches=()
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "bench.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
        *)
            if [[ " ${all[*]} " != *" $arg "* ]]; then
                echo "bench.sh: unknown bench $arg (benches: ${all[*]})" >&2
                exit 2
            fi
            benches+=("$arg")
            ;;
    esac
done
[ ${#benches[@]} -gt 0 ] || benches=("${all[@]}")

target_dir="${CARGO_TARGET_DIR:-target}"
results="$(mkdir -p "$target_dir" && cd "$target_dir" && pwd)/bench-results"
rm -rf "$results"
mkdir -p "$results"
export BENCH_RESULTS_DIR="$results"
if [ "$smoke" = 1 ]; then
    export BENCH_SMOKE=1
else
    unset BENCH_SMOKE
fi
locked=()
[ "${CI:-}" = true ] && locked=(--locked)

echo "==> building the benches (release)" >&2
build_start=$(date +%s)
cargo bench -p jobserver-benches "${locked[@]}" --no-run 2>"$results/build.log" || {
    cat "$results/build.log" >&2
    exit 1
}
echo "    built in $(($(date +%s) - build_start)) s" >&2

failed=()
run_start=$(date +%s)
for bench in "${benches[@]}"; do
    start=$(date +%s)
    if cargo bench -p jobserver-benches "${locked[@]}" --bench "$bench" >"$results/$bench.log" 2>&1; then
        echo "==> $bench: ok ($(($(date +%s) - start)) s)" >&2
    else
        echo "==> $bench: FAILED ($(($(date +%s) - start)) s); last lines of $results/$bench.log:" >&2
        tail -n 30 "$results/$bench.log" >&2
        failed+=("$bench")
    fi
done
run_time=$(($(date +%s) - run_start))

cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
{
    echo "## Benchmark results"
    echo
    if [ "$smoke" = 1 ]; then
        echo "**SMOKE RUN: tiny samples; these figures are not meaningful.**"
        echo
    fi
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs (${cpu_model:-unknown CPU}), Linux $(uname -r); benches ran for ${run_time} s."
    echo
    echo "| metric | ours | reference | ratio | target | met? |"
    echo "|---|---|---|---|---|---|"
    for bench in "${benches[@]}"; do
        [ -f "$results/$bench.tsv" ] || continue
        awk -F '\t' '{
            met = $6 == "yes" ? "yes" : ($6 == "no" ? "**no**" : "—")
            printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, met
        }' "$results/$bench.tsv"
    done
    echo
    echo "Notes:"
    echo
    for bench in "${benches[@]}"; do
        [ -f "$results/$bench.tsv" ] || continue
        awk -F '\t' '$7 != "" { printf "- %s: %s\n", $1, $7 }' "$results/$bench.tsv"
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo
        echo "**Failed benches: ${failed[*]}** (see their .log files)."
    fi
} >"$results/table.md"
cat "$results/table.md"

[ ${#failed[@]} -eq 0 ]
