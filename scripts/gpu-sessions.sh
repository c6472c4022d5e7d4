#!/usr/bin/env bash
# The GPU sessions behind docs/results.md, on a host without internet that already has torch.
# Usage: scripts/gpu-sessions.sh STAGE...
#   (STAGE: nvml | record | judge | slow | everything | neighbour | neighbour-slow | timeout | full | xdist | cp
#          | fp8 | fp8warm | cudagraphs | best | issue512 | hires | phases | nightly | pack-cache)
# Wheels for what the host lacks are expected in .whl/ (see README, "Offline install"); .whl/inductor.tgz, if
# present, seeds torch.compile's cache. Every stage's log, report and baseline folder land in $OUT/STAGE.tgz.
# The stages after cp measure the fastest stacks; docs/stacks.md gives their order, variables and wall times.
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
# (BASELINES_FROM: a folder an earlier command's archive brought back, for a machine that started afresh.)
[ -d "$BASE" ] || cp -r "${BASELINES_FROM:-baselines}" "$BASE"
common=(-m gpu --fluxperf-model=${MODEL:-synthetic} ${EXTRA:-} --fluxperf-num-prompts=${PROMPTS:-4}
        --fluxperf-lpips-random-backbone --fluxperf-baseline-dir=$BASE -p no:cacheprovider -W ignore::UserWarning -rA)
VARIANTS=${VARIANTS:-compile,pruna_cache_compile}
run() {  # run NAME ARGS...: one pytest session, its log and report kept under $WORK/NAME; LIMIT=s caps this one
  local name=$1; shift
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 90 ]; then echo "=== $name: skipped, ${left}s left"; return; fi
  [ -n "${LIMIT:-}" ] && [ "$LIMIT" -lt "$left" ] && left=$LIMIT
  echo "=== $name: $(date -u +%FT%TZ) pytest $* (at most ${left}s)"
  local start=$SECONDS
  timeout "$left" ${LAUNCH:-python3} -m pytest fluxperf/suite "${common[@]}" --fluxperf-report-dir="$WORK/$name" "$@" \
    > "$WORK/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
  # Where the time went, per variant: build (and its warm-up call, where compilation happens), calibration,
  # untimed and timed rounds, rendering; a session ended by its limit shows the step it was in.
  grep -E "^\[fluxperf\] .* done in " "$WORK/$name.log" | sed 's/^\[fluxperf\] //' | cut -c1-130
  local last; last=$(grep -E "^\[fluxperf\] " "$WORK/$name.log" | tail -1)
  case $last in *" done in "*|"") ;; *) echo "last step, unfinished: ${last:11:150}" ;; esac
  # pytest's --durations lines, where a stage asks for them: a variant's first test's setup is its whole measurement.
  grep -E "^[0-9.]+s (setup|call) " "$WORK/$name.log" | head -60 | sed 's|fluxperf/suite/||' | cut -c1-130
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
      # (TIMEOUT_ARGS replaces --fluxperf-require-baseline, e.g. with nothing where no baseline is recorded yet)
      run timeout --fluxperf-variants=${TIMEOUT_VARIANT:-ao_fp8_compile},$VARIANTS \
        ${TIMEOUT_ARGS---fluxperf-require-baseline} --fluxperf-build-timeout=${BUILD_TIMEOUT:-45} \
        --fluxperf-max-rounds=15 ;;
    full)   # every variant (or VARIANTS), one process on one GPU
      run full --fluxperf-variants=$VARIANTS --fluxperf-param=calib_size=2 ;;
    xdist)  # the same session spread over the visible GPUs, one pytest-xdist worker each
      run xdist -n auto --fluxperf-variants=$VARIANTS --fluxperf-param=calib_size=2 ;;
    cp)     # context parallelism over 2 GPUs at 1024², against single-GPU eager and compile
      LAUNCH="python3 -m torch.distributed.run --nproc-per-node=2" run cp-ulysses --fluxperf-height=1024 \
        --fluxperf-width=1024 --fluxperf-num-prompts=2 --fluxperf-variants=compile,context_parallel \
        --fluxperf-rounds=4 --fluxperf-max-rounds=4 ;;
    # ----- the fastest stacks; docs/stacks.md gives the order to run them in, their variables and wall times -----
    fp8)    # ao_fp8 builds per ao_fp8_tuning setting, and their speed at 512². The first setting's build is cold for
            # the fp8 graph; a later one compiles its own kernels, capped at FP8_TUNED_LIMIT s so it can't take the
            # whole command (a capped session says which step it was in and for how long)
      limit=""
      for tuning in ${FP8_TUNINGS:-off}; do
        LIMIT=$limit run fp8-$tuning --fluxperf-variants=${FP8_VARIANTS:-ao_fp8_compile} \
          --fluxperf-param=ao_fp8_tuning=$tuning ${FP8_ARGS:-}
        limit=${FP8_TUNED_LIMIT:-240}
      done ;;
    fp8warm)  # the fp8 session again on the same machine: its build with inductor's cache warm
      run fp8warm --fluxperf-variants=${FP8_VARIANTS:-ao_fp8_compile} --fluxperf-param=ao_fp8_tuning=off \
        ${FP8_ARGS:-} ;;
    cudagraphs)  # build time, peak memory and speed at 512²
      run cudagraphs --fluxperf-variants=${CG_VARIANTS:-compile_cudagraphs} ${CG_ARGS:-} ;;
    best)   # the two stacks at 512²; BEST_ARGS takes their tunables, e.g. --fluxperf-param=best_cached_fp8=static
      run best --fluxperf-variants=${BEST_VARIANTS:-best_cached,best_exact} ${BEST_ARGS:-} ;;
    issue512)  # fp8, cudagraphs and best in one session: one pipeline build and eager warm-up instead of three; the
               # variants run in the registry's (alphabetical) order, so a session cut short loses compile_cudagraphs
      run issue512 --fluxperf-variants=${ISSUE512_VARIANTS:-ao_fp8_compile,best_cached,best_exact,compile_cudagraphs} \
        ${ISSUE512_ARGS:-} ;;
    hires)  # 1024², each variant once: 2 untimed and 2 timed rounds, 2 prompts rendered
      run hires --fluxperf-height=1024 --fluxperf-width=1024 --fluxperf-num-prompts=${HIRES_PROMPTS:-2} \
        --fluxperf-rounds=2 --fluxperf-max-rounds=2 \
        --fluxperf-variants=${HIRES_VARIANTS:-best_cached,best_exact,compile} ${HIRES_ARGS:-} ;;
    phases)  # the nightly in pieces: its variants (all, or NIGHTLY_VARIANTS) with its rounds, rendering PHASE_PROMPTS
             # prompts; pytest's durations give each variant's whole measurement, the progress lines its parts
      run phases --fluxperf-num-prompts=${PHASE_PROMPTS:-8} ${NIGHTLY_VARIANTS:+--fluxperf-variants=$NIGHTLY_VARIANTS} \
        --durations=0 --durations-min=1 ;;
    nightly)  # the nightly as the workflow runs it, at 512²: every variant, all 56 prompts timed, the first 8 judged
              # for quality (longer than one command)
      run nightly --fluxperf-num-prompts=56 --fluxperf-quality-prompts=8 ${NIGHTLY_VARIANTS:+--fluxperf-variants=$NIGHTLY_VARIANTS} \
        --durations=0 --durations-min=1 ;;
    pack-cache)  # torch.compile's cache, for the next command's .whl/inductor.tgz (files over 16 MiB don't come back)
      tar czf "$RESULTS/inductor.tgz" -C /tmp inductor && du -h "$RESULTS/inductor.tgz" ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
