#!/usr/bin/env bash
# The GPU sessions behind docs/results.md, on a host without internet that already has torch.
# Usage: scripts/gpu-sessions.sh STAGE...
#   (STAGE: nvml | record | judge | slow | everything | neighbour | neighbour-slow | timeout | full | xdist | cp)
# Wheels for what the host lacks are expected in .whl/ (see README, "Offline install"); .whl/inductor.tgz, if
# present, seeds torch.compile's cache. Every stage's log, report and baseline folder land in $OUT/STAGE.tgz.
set -uo pipefail
DEADLINE=${DEADLINE:-570}   # seconds; the device machine allows 600 per command
RESULTS=${OUT:-/tmp}        # only a few files may come back: each stage is packed into one archive
WORK=/tmp/fluxperf-out
mkdir -p "$WORK"
# Sessions share one machine state: the compile cache, eager's reference images and the baseline folder
# persist across stages and commands as long as the machine is held.
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor FLUXPERF_CACHE_DIR=/tmp/fluxperf-cache
[ -d /tmp/inductor ] || { [ -f .whl/inductor.tgz ] && tar xzf .whl/inductor.tgz -C /tmp; }
if [ ! -d /tmp/site ]; then
  wheels=$(for d in ${WHEEL_DIRS:-core}; do ls .whl/$d/*.whl 2>/dev/null; done)
  [ -z "$wheels" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site $wheels || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PRUNA_METRICS_ENABLED=false
BASE=/tmp/fluxperf-baselines
# A fresh machine starts from the shipped baselines; record stages overwrite the copy, never the repository.
[ -d "$BASE" ] || cp -r baselines "$BASE"
common=(-m gpu --fluxperf-model=${MODEL:-synthetic} ${EXTRA:-} --fluxperf-num-prompts=${PROMPTS:-4}
        --fluxperf-lpips-random-backbone --fluxperf-baseline-dir=$BASE -p no:cacheprovider -W ignore::UserWarning -rA)
VARIANTS=${VARIANTS:-compile,pruna_cache_compile}
run() {  # run NAME ARGS...: one pytest session, its log and report kept under $WORK/NAME
  local name=$1; shift
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 90 ]; then echo "=== $name: skipped, ${left}s left"; return; fi
  echo "=== $name: $(date -u +%FT%TZ) pytest $*"
  local start=$SECONDS
  timeout "$left" ${LAUNCH:-python3} -m pytest fluxperf/suite "${common[@]}" --fluxperf-report-dir="$WORK/$name" "$@" \
    > "$WORK/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
  sed -n '/fluxperf summary/,/^reports:/p' "$WORK/$name.log" | cut -c1-220
  grep -E "^(FAILED|ERROR)" "$WORK/$name.log" | cut -c1-900
  grep -E "FluxperfWarning: INCONCLUSIVE" "$WORK/$name.log" | sort -u | cut -c1-900 | head -4
  grep -E "passed|failed" "$WORK/$name.log" | tail -1
  cp -r "$BASE" "$WORK/$name/" 2>/dev/null
  tar czf "$RESULTS/$name.tgz" --exclude='*.png' -C "$WORK" "$name" "$name.log"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
for stage in "$@"; do
  case $stage in
    record)  run record --fluxperf-variants=$VARIANTS --fluxperf-update-baselines ;;
    judge)   run judge --fluxperf-variants=$VARIANTS --fluxperf-require-baseline ;;
    slow)    # each variant alone 10% slower
      FLUXPERF_TEST_SLOWDOWN=$(echo $VARIANTS | sed 's/\([a-z_]*\)/\1=0.1/g') \
        run slow --fluxperf-variants=$VARIANTS --fluxperf-require-baseline -p tests.slowdown ;;
    everything)  # every pipeline call 10% slower, eager's included
      FLUXPERF_TEST_SLOWDOWN=$(echo eager,$VARIANTS | sed 's/\([a-z_]*\)/\1=0.1/g') \
        run everything --fluxperf-variants=$VARIANTS --fluxperf-require-baseline -p tests.slowdown ;;
    nvml)   # what the contention sensor reads here, alone and beside a neighbour
      python3 scripts/gpu-neighbour.py --check 2>&1 | grep -v Warning ;;
    neighbour|neighbour-slow)   # another process's matmul bursts on the GPU, NEIGHBOUR of the time
      python3 scripts/gpu-neighbour.py --duty ${NEIGHBOUR:-0.2} --burst-ms 3 --seconds 900 \
        --log "$WORK/$stage-neighbour.log" & pid=$!
      sleep 8
      if [ $stage = neighbour ]; then
        run $stage --fluxperf-variants=$VARIANTS --fluxperf-require-baseline --fluxperf-max-rounds=15
      else  # and each variant 10% slower as well
        FLUXPERF_TEST_SLOWDOWN=$(echo $VARIANTS | sed 's/\([a-z_]*\)/\1=0.1/g') \
          run $stage --fluxperf-variants=$VARIANTS --fluxperf-require-baseline --fluxperf-max-rounds=15 -p tests.slowdown
      fi
      kill $pid; cat "$WORK/$stage-neighbour.log" ;;
    timeout)   # TIMEOUT_VARIANT's cold build past a short limit, then VARIANTS judged in the same session
      run timeout --fluxperf-variants=${TIMEOUT_VARIANT:-ao_fp8_compile},$VARIANTS --fluxperf-require-baseline \
        --fluxperf-build-timeout=${BUILD_TIMEOUT:-45} --fluxperf-max-rounds=15 ;;
    full)   # every variant (or VARIANTS), one process on one GPU
      run full --fluxperf-variants=$VARIANTS --fluxperf-param=calib_size=2 ;;
    xdist)  # the same session spread over the visible GPUs, one pytest-xdist worker each
      run xdist -n auto --fluxperf-variants=$VARIANTS --fluxperf-param=calib_size=2 ;;
    cp)     # context parallelism over 2 GPUs at 1024², against single-GPU eager and compile
      LAUNCH="python3 -m torch.distributed.run --nproc-per-node=2" run cp-ulysses --fluxperf-height=1024 \
        --fluxperf-width=1024 --fluxperf-num-prompts=2 --fluxperf-variants=compile,context_parallel \
        --fluxperf-rounds=4 --fluxperf-max-rounds=4 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
