#!/usr/bin/env bash
# spikestore's GPU check: one command, from the repository root, everything under $OUT.
#
#   bash benchmarks/gpu_check.sh                     # on a GPU machine (about 4-5 minutes)
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh    # dry run, CPU
#   bash benchmarks/gpu_check.sh --fetch-wheels      # here, with network: cp312 wheels
#                                                    # of the deps into .whl/ (see below)
#
# Runs the CUDA tests (pytest -m cuda) and each part of benchmarks/gpu_check.py in a
# process of its own, each under a timeout inside a total budget; a failing part never
# stops the others. Writes $OUT/summary.md (PASS/FAIL/SKIPPED and figures per part),
# results.json, overhead.json, pytest_cuda.txt and gpu_check.log (at most 8 files).
#
# Environment: OUT (default ./gpu_check_out), GPU_CHECK_DEVICE (cuda | cpu),
# GPU_CHECK_QUICK (1: tiny sizes), GPU_CHECK_BUDGET (seconds in all, default 450),
# GPU_CHECK_OVERHEAD_S (seconds for the overhead part's timed blocks, default 150),
# GPU_CHECK_PYTHON (the interpreter; else .venv/bin/python, python3, python: the first
# whose torch sees CUDA when the device is cuda), GPU_CHECK_WHEELS (default .whl:
# wheels installed into /tmp/gpu_check_site when the interpreter lacks zarr, numcodecs,
# google-crc32c, donfig, spikingjelly or loguru; the GPU machines' python3 has torch
# with CUDA but none of these, and a .venv built here does not travel or run there).
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
WHEELS=${GPU_CHECK_WHEELS:-.whl}

if [ "${1:-}" = "--fetch-wheels" ]; then
    # The GPU machines' python3 is CPython 3.12 on x86-64 (see the device notes).
    py=${GPU_CHECK_PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
    exec "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" \
        zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
        spikingjelly==2.0.0 loguru==0.7.3
fi

OUT=${OUT:-./gpu_check_out}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-450}
QUICK=()
[ -n "${GPU_CHECK_QUICK:-}" ] && [ "${GPU_CHECK_QUICK}" != 0 ] && QUICK=(--quick)
mkdir -p "$OUT/parts" || exit 2
OUT=$(cd "$OUT" && pwd)
export OUT PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export SJ_LIF_CUDA_IMPLEMENTATION=${SJ_LIF_CUDA_IMPLEMENTATION:-torch}
LOG=$OUT/gpu_check.log
START=$(date +%s)
: >"$LOG"
say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# ---- the interpreter: one with torch (with CUDA when asked for)
want_cuda=0
[ "$DEVICE" = cuda ] && want_cuda=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # spikestore from this tree
probe='import sys, torch
print(int(torch.cuda.is_available()))
try:
    import zarr, numcodecs, google_crc32c, donfig, spikingjelly, loguru, spikestore
    print(1, "spikestore", spikestore.__version__, "at", spikestore.__file__)
except Exception as e:
    print(0, "missing:", type(e).__name__, e)
print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
PY="" INFO=""
for c in ${GPU_CHECK_PYTHON:-} .venv/bin/python python3 python; do
    command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || continue
    info=$("$c" -c "$probe" 2>/dev/null) || continue
    [ -z "$PY" ] && PY=$c INFO=$info   # the first with torch, if none has CUDA
    if [ "$want_cuda" = 0 ] || [ "$(echo "$info" | sed -n 1p)" = 1 ]; then
        PY=$c INFO=$info
        break
    fi
done
if [ -z "$PY" ]; then
    say "no python with torch found (tried ${GPU_CHECK_PYTHON:-} .venv/bin/python python3 python)"
    printf '# spikestore GPU check\n\nFAIL: no python with torch found\n' >"$OUT/summary.md"
    exit 1
fi
say "python: $PY: $(echo "$INFO" | tr '\n' ';')"

# ---- spikestore's deps from the wheels where the interpreter lacks them
if [ "$(echo "$INFO" | sed -n 2p | cut -c1)" != 1 ]; then
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        say "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into /tmp/gpu_check_site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu_check_site "$WHEELS"/*.whl >>"$LOG" 2>&1
        export PYTHONPATH="/tmp/gpu_check_site:$PYTHONPATH"
        "$PY" -c "$probe" 2>&1 | sed -n 2p | tee -a "$LOG"
    else
        say "deps missing and no wheels in $WHEELS (run: bash benchmarks/gpu_check.sh --fetch-wheels)"
    fi
fi
if [ "$want_cuda" = 1 ] && command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi >>"$LOG" 2>&1
fi

# ---- each part under a timeout, within the total budget
run() {  # run NAME LIMIT_S CMD...: stdout+stderr to LOG (or $REDIRECT), rc to parts/NAME.rc
    local name=$1 limit=$2 left rc
    shift 2
    left=$((START + BUDGET - $(date +%s)))
    if [ "$left" -lt 25 ]; then
        say "$name: skipped, no time left (${left}s)"
        echo "no time left" >"$OUT/parts/$name.rc"
        return
    fi
    [ "$limit" -gt $((left - 20)) ] && limit=$((left - 20))
    [ "$limit" -lt 5 ] && limit=5
    say "$name: start (limit ${limit}s)"
    if command -v timeout >/dev/null 2>&1; then
        timeout -k 10 "$limit" "$@" >>"${REDIRECT:-$LOG}" 2>&1
    else
        "$@" >>"${REDIRECT:-$LOG}" 2>&1
    fi
    rc=$?
    echo "$rc" >"$OUT/parts/$name.rc"
    say "$name: rc=$rc after $(($(date +%s) - START))s in all"
}
part() {  # part NAME LIMIT_S [extra args]
    local name=$1 limit=$2
    shift 2
    run "$name" "$limit" "$PY" benchmarks/gpu_check.py --device "$DEVICE" --out "$OUT" \
        ${QUICK[@]+"${QUICK[@]}"} --part "$name" "$@"
}

part devices 60
part compare 90
part sync 90
part memcpy 90
# The whole suite's CUDA tests; the dry run collects only the files that have some.
tests=tests
[ ${#QUICK[@]} -gt 0 ] && tests=$(grep -l "mark.cuda" tests/test_*.py tests/*/test_*.py | tr '\n' ' ')
echo "\$ python -m pytest -q -m cuda $tests" >"$OUT/pytest_cuda.txt"
# shellcheck disable=SC2086
REDIRECT=$OUT/pytest_cuda.txt run pytest 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider \
    --continue-on-collection-errors $tests
# The overhead blocks get 2/3 of what is left, at most 150 s (OVERHEAD_S), at least 10 s.
left=$((START + BUDGET - $(date +%s)))
blocks=$(((left - 25) * 2 / 3))
cap=${GPU_CHECK_OVERHEAD_S:-150}
[ "$blocks" -gt "$cap" ] && blocks=$cap
[ "$blocks" -lt 10 ] && blocks=10
part overhead $((left - 25)) --budget "$blocks"

# ---- the summary (a minimal one if the summarizer itself fails)
"$PY" benchmarks/gpu_check.py --summarize --device "$DEVICE" --out "$OUT" \
    ${QUICK[@]+"${QUICK[@]}"} --python "$PY" 2>>"$LOG" | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [ ! -s "$OUT/summary.md" ]; then
    {
        printf '# spikestore GPU check\n\nThe summarizer failed (rc %s): see gpu_check.log.\n\n' "$rc"
        for f in "$OUT"/parts/*.rc; do echo "- $(basename "$f" .rc): rc $(cat "$f")"; done
    } >"$OUT/summary.md"
    rc=1
fi
say "done in $(($(date +%s) - START))s, rc=$rc; summary: $OUT/summary.md"
exit "$rc"
