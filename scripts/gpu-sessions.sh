#!/usr/bin/env bash
# The GPU sessions behind docs/results.md, on a host without internet that already has torch.
# Usage: scripts/gpu-sessions.sh STAGE   (STAGE: verdicts | rejudge | slow | full | xdist | cp)
# Wheels for what the host lacks are expected in .whl/ (see README, "Offline install").
set -uo pipefail
stage=${1:?stage}
DEADLINE=${DEADLINE:-560}   # seconds; the device machine allows 600 per command
RESULTS=${OUT:-/tmp}        # only a few files may come back: everything is packed into one archive
OUT=/tmp/fluxperf-out
rm -rf "$OUT" && mkdir -p "$OUT"
pack() {
  cp -r baselines "$OUT/" 2>/dev/null
  tar czf "$RESULTS/$stage.tgz" -C "$OUT" .
  # Only files under 16 MB come back: at 1024² the image grids are what goes.
  [ "$(stat -c %s "$RESULTS/$stage.tgz")" -lt 16000000 ] || tar czf "$RESULTS/$stage.tgz" --exclude='*.png' -C "$OUT" .
  # torch.compile's cache, so that a later machine skips the cold compile (if it is small enough to carry)
  tar czf /tmp/inductor.tgz -C /tmp inductor 2>/dev/null && du -h /tmp/inductor.tgz \
    && [ "$(stat -c %s /tmp/inductor.tgz)" -lt 16000000 ] && cp /tmp/inductor.tgz "$RESULTS/"
}
trap pack EXIT
# Every command starts from the carried compile cache alone, so that sessions compare under one cache state.
rm -rf /tmp/inductor /tmp/fluxperf-cache
[ -f .whl/inductor.tgz ] && tar xzf .whl/inductor.tgz -C /tmp
wheels=$(for d in ${WHEEL_DIRS:-core}; do ls .whl/$d/*.whl 2>/dev/null; done)
if [ -n "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PRUNA_METRICS_ENABLED=false
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor FLUXPERF_CACHE_DIR=/tmp/fluxperf-cache
common=(-m gpu --fluxperf-model=${MODEL:-synthetic} ${EXTRA:-} --fluxperf-num-prompts=4 --fluxperf-lpips-random-backbone
        -p no:cacheprovider -W ignore::UserWarning -rA)
run() {  # run NAME ARGS...: one pytest session, its log and report kept under $OUT/NAME
  local name=$1; shift
  echo "=== $name: $(date -u +%FT%TZ) pytest $*"
  local start=$SECONDS
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 60 ]; then echo "=== $name: skipped, ${left}s left"; return; fi
  timeout "$left" ${LAUNCH:-python3} -m pytest tests/perf "${common[@]}" --fluxperf-report-dir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
  sed -n '/fluxperf summary/,/^reports:/p' "$OUT/$name.log"
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/$name.log" | tail -5
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
for m in pruna modelopt.torch.quantization; do  # optional packages: say early if a carried one doesn't import
  python3 -c "import $m" 2>&1 | tail -1 | sed "s/^/import $m: /"
done
case $stage in
  verdicts)
    run record --fluxperf-variants=compile --fluxperf-update-baselines --fluxperf-rounds=10
    for i in 1 2 3; do run judge$i --fluxperf-variants=compile --fluxperf-require-baseline --fluxperf-max-rounds=10; done
    FLUXPERF_TEST_SLOWDOWN=compile=0.15 run slow15 --fluxperf-variants=compile --fluxperf-require-baseline \
      --fluxperf-max-rounds=10 -p tests.slowdown
    ;;
  rejudge)
    run judge3 --fluxperf-variants=compile --fluxperf-require-baseline --fluxperf-max-rounds=10
    FLUXPERF_TEST_SLOWDOWN=compile=0.15 run slow15 --fluxperf-variants=compile --fluxperf-require-baseline \
      --fluxperf-max-rounds=10 -p tests.slowdown
    ;;
  slow)
    FLUXPERF_TEST_SLOWDOWN=compile=0.15 run slow15b --fluxperf-variants=compile --fluxperf-require-baseline \
      --fluxperf-max-rounds=10 -p tests.slowdown
    ;;
  full)   # every variant (or VARIANTS), one process on one GPU: the numbers of docs/results.md's variant table
    CUDA_VISIBLE_DEVICES=0 run full ${VARIANTS:+--fluxperf-variants=$VARIANTS} --fluxperf-param=calib_size=2 --fluxperf-max-rounds=10
    ;;
  xdist)  # the same session spread over the visible GPUs, one pytest-xdist worker each
    run xdist -n auto ${VARIANTS:+--fluxperf-variants=$VARIANTS} --fluxperf-param=calib_size=2 --fluxperf-max-rounds=10
    ;;
  cp)     # context parallelism over 2 GPUs at 1024², against single-GPU eager and compile
    LAUNCH="python3 -m torch.distributed.run --nproc-per-node=2" run cp-ulysses --fluxperf-height=1024 \
      --fluxperf-width=1024 --fluxperf-num-prompts=2 --fluxperf-variants=compile,context_parallel \
      --fluxperf-rounds=4 --fluxperf-max-rounds=4
    LAUNCH="python3 -m torch.distributed.run --nproc-per-node=2" run cp-ring --fluxperf-height=1024 \
      --fluxperf-width=1024 --fluxperf-num-prompts=2 --fluxperf-variants=context_parallel \
      --fluxperf-param=cp_mode=ring --fluxperf-rounds=4 --fluxperf-max-rounds=4
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
esac
