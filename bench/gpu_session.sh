#!/usr/bin/env bash
# Everything a session runs on the lent GPU, in one call. Needs the wheels in .whl/ (see docs/deploy.md, "A GPU host without network").
# Writes results under $OUT (or bench/results when OUT is unset). Usage: bench/gpu_session.sh [STEP...]
# Steps: performance (issue 6; PERFORMANCE_ARGS adds flags), tests (the GPU-marked tests; tests_rest: all but the
# anti-cheat corpus), diag (a short performance look), pair (performance on
# GPU 0 while GPU 1 runs the tests and a timing-lock comparison), isolation (issue 5),
# compile, dobench, examples, scaling and cv_load (issue 9: bench/scaling.py, bench/cv_under_load.py; both
# start the carried .redis/redis-server, from bash bench/build_redis.sh; extra flags in SCALING_ARGS and CV_LOAD_ARGS),
# churn (bench/context_churn.py: CUDA contexts made and torn down per second; CHURN_ARGS), several_gpus (issue 9's
# churn and scaling runs on a multi-GPU host), native (issue 15 item 4: the CUPTI recorder's GPU tests and its cost,
# ~1.5 min), evidence (issue 15: tests/gpu/test_gpu_data_plane.py and the
# engine tests), cli_vs_kb (issue 19: `referee check` against KernelBench's evaluator on small problems, ~4 min) and
# kb_sizes (issue 15: four problems at KernelBench's published sizes, both tools; every evaluation ends by 560 s);
# both need a KernelBench checkout: KERNELBENCH=path (default shared/kernelbench);
# confine (issue 18, ~2 min: CUDA, CUDA IPC and Triton's compilers under each
# lockdown layer, then the locked-down warm pool under unshare against an attacker past its guards; confine_bench: the
# first half alone, for a call whose `tests` step already runs the second), corpus (issue 16: bench/corpus.py on CORPUS_MANIFEST),
# anticheat (issue 16: the anti-cheat corpus, CPU files plus tests/gpu/{exploits,honest}, ~3 min).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# bench/gpu_call.sh installs once and sets GPU_SITE_READY before starting several of these side by side
[ -n "${GPU_SITE_READY:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 90
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton, pydantic, typer, rich, fastapi, uvicorn, httpx, rq, redis, prometheus_client, yaml; assert torch.cuda.is_available(); print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" || exit 91
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee -a "$OUT/nvidia-smi.txt"
steps=${*:-performance tests}
need_redis() {  # the steps with Redis stop at once when the carried redis-server is missing or cannot run here
  .redis/redis-server --version || { echo "$1: .redis/redis-server is missing or does not run here (bash bench/build_redis.sh, and carry .redis/)"; return 1; }
}
status=0
for step in $steps; do
  echo "=== $step $(date +%T)"
  case $step in
    performance) python3 -m bench.performance --out "$OUT" ${PERFORMANCE_ARGS:-} 2>&1 | tee "$OUT/performance.log" || status=1 ;;
    tests) REFEREE_RESULTS_DIR="$OUT" python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu --tb=short 2>&1 | tee "$OUT/gpu-tests.log" || status=1 ;;
    tests_rest) # every GPU test but the anti-cheat corpus (test_gpu_corpus.py): with `anticheat` beside it, the whole set in half the time
      REFEREE_RESULTS_DIR="$OUT" python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu --deselect tests/gpu/test_gpu_corpus.py --tb=short 2>&1 | tee "$OUT/gpu-tests.log" || status=1 ;;
    diag) # a short look at latency and throughput after a change (no baseline, no stability)
      python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu/test_gpu_launchers.py tests/gpu/test_gpu_engine.py --tb=short 2>&1 | tee "$OUT/gpu-tests-diag.log" || status=1
      for workers in 4 8; do
        python3 -m bench.performance --out "$OUT" --workers $workers --latency 12 --batch 60 --stability 0 --baseline-latency 0 --baseline-batch 0 --label="-diag-w$workers" 2>&1 | tee "$OUT/performance-diag-w$workers.log" || status=1
      done ;;
    pair) # two GPUs at once: the performance benchmark on GPU 0; on GPU 1 the GPU tests, then throughput
      # with and without exclusive timing (REFEREE_EXCLUSIVE_TIMING) for comparison. A quick gate first.
      CUDA_VISIBLE_DEVICES=0 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu/test_gpu_launchers.py --tb=short 2>&1 | tee "$OUT/gpu-gate.log"
      grep -q " passed" "$OUT/gpu-gate.log" && ! grep -q "failed" "$OUT/gpu-gate.log" || { echo "gate failed"; exit 1; }
      ( export CUDA_VISIBLE_DEVICES=1
        REFEREE_RESULTS_DIR="$OUT" python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu --tb=short > "$OUT/gpu-tests.log" 2>&1 || echo "GPU tests failed" >> "$OUT/gpu-tests.log"
        for timing in on off; do
          REFEREE_EXCLUSIVE_TIMING=$timing python3 -m bench.performance --out "$OUT" --latency 3 --batch 60 --stability 0 --baseline-latency 0 --baseline-batch 0 --label="-exclusive-timing-$timing" > "$OUT/performance-exclusive-timing-$timing.log" 2>&1
        done ) &
      CUDA_VISIBLE_DEVICES=0 python3 -m bench.performance --out "$OUT" --baseline-latency 4 --baseline-batch 12 --label="${PERF_LABEL:-}" 2>&1 | tee "$OUT/performance.log" || status=1
      wait
      tail -3 "$OUT/gpu-tests.log"; grep -q "GPU tests failed" "$OUT/gpu-tests.log" && status=1 ;;
    latency) # single submissions only, on GPU 0 with nothing else on the host
      CUDA_VISIBLE_DEVICES=0 python3 -m bench.performance --out "$OUT" --latency 12 --batch 0 --stability 0 --baseline-latency 0 --baseline-batch 0 --label=-latency 2>&1 | tee "$OUT/performance-latency.log" || status=1 ;;
    evidence) # issue 15: the GPU data plane (CUDA IPC), checked timed rounds, host memory vs tensor size (~3 min)
      REFEREE_RESULTS_DIR="$OUT" python3 -m pytest -q -s -p no:cacheprovider -m gpu tests/gpu/test_gpu_data_plane.py tests/gpu/test_gpu_engine.py --tb=short 2>&1 | tee "$OUT/gpu-evidence.log" || status=1 ;;
    isolation) python3 -m bench.gpu_isolation --out "$OUT" 2>&1 | tee "$OUT/gpu-isolation.log" || status=1 ;;
    compile) python3 -m bench.compile_breakdown --out "$OUT" 2>&1 | tee "$OUT/compile-breakdown.log" || status=1 ;;
    dobench) python3 -m bench.dobench_examples --out "$OUT" 2>&1 | tee "$OUT/dobench.log" || status=1 ;;
    examples) python3 -m bench.gpu_examples --devices cuda --out "$OUT" 2>&1 | tee "$OUT/gpu-examples.log" || status=1 ;;
    scaling) need_redis scaling && python3 -m bench.scaling --out "$OUT" --redis-server .redis/redis-server ${SCALING_ARGS:-} 2>&1 | tee "$OUT/scaling.log" || status=1 ;;
    several_gpus) # issue 9 on a host with 2+ GPUs (~5 min on two): context churn on GPU 0 alone and spread
      # over every GPU (the same rate means one driver lock for the host), then throughput with 1, 2 (, 4)
      # GPUs at 8 slots each. `several_gpus cv_load` adds the CV under load (~3 min) in the same call.
      gpus=$(nvidia-smi -L | wc -l); every=$(seq -s, 0 $((gpus - 1)))
      [ "$gpus" -ge 2 ] || { echo "several_gpus: $gpus GPU here"; exit 1; }
      python3 -m bench.context_churn --out "$OUT" --gpus 0 --parallel 8 --seconds 8 --label=-gpu0 2>&1 | tee "$OUT/context-churn.log" || status=1
      python3 -m bench.context_churn --out "$OUT" --gpus "$every" --parallel 8 --seconds 8 --label="-x$gpus" 2>&1 | tee -a "$OUT/context-churn.log" || status=1
      need_redis several_gpus && python3 -m bench.scaling --out "$OUT" --redis-server .redis/redis-server --concurrency 8 --submissions 100 ${SCALING_ARGS:-} 2>&1 | tee "$OUT/scaling.log" || status=1 ;;
    native) # the native CUPTI recorder: real records against CUDA events, the warm pool's order, torch's profiler; then its cost
      python3 -m pytest -q -s -p no:cacheprovider -m gpu tests/gpu/test_native_recorder.py --tb=short 2>&1 | tee "$OUT/native-tests.log" || status=1
      python3 -m bench.native_recorder --out "$OUT" 2>&1 | tee "$OUT/native-recorder.log" || status=1 ;;
    confine_bench) python3 -m bench.gpu_confinement --out "$OUT" 2>&1 | tee "$OUT/gpu-confinement.log" || status=1 ;;
    confine) python3 -m bench.gpu_confinement --out "$OUT" 2>&1 | tee "$OUT/gpu-confinement.log" || status=1
      REFEREE_RESULTS_DIR="$OUT" python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu/test_gpu_confinement.py --tb=short 2>&1 | tee "$OUT/gpu-confinement-tests.log" || status=1 ;;
    corpus) # issue 16: a manifest of (reference, candidate) pairs through the engine, accuracy per label (~3 min for
      # ~97 pairs at 4 at once); CORPUS_MANIFEST names the manifest (read by path, never copied), CORPUS_ARGS adds flags
      [ -n "${CORPUS_MANIFEST:-}" ] || { echo "corpus: set CORPUS_MANIFEST=/path/to/manifest.jsonl"; exit 1; }
      python3 -m bench.corpus --manifest "$CORPUS_MANIFEST" --device cuda --out "$OUT" ${CORPUS_ARGS:-} 2>&1 | tee "$OUT/corpus.log" || status=1 ;;
    anticheat)  # the anti-cheat corpus only (CPU files plus tests/gpu/{exploits,honest}), ~3 min
      REFEREE_RESULTS_DIR="$OUT" python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu/test_gpu_corpus.py --tb=short 2>&1 | tee "$OUT/gpu-anticheat.log" || status=1 ;;
    churn) python3 -m bench.context_churn --out "$OUT" ${CHURN_ARGS:-} 2>&1 | tee "$OUT/context-churn.log" || status=1 ;;
    cv_load) need_redis cv_load && python3 -m bench.cv_under_load --out "$OUT" --redis-server .redis/redis-server ${CV_LOAD_ARGS:---problems softmax_8192x4096,matmul_2048} 2>&1 | tee "$OUT/cv-under-load.log" || status=1 ;;
    cli_vs_kb) # ~4 min: 4 example pairs x 2 repeats x (referee check + KernelBench's evaluator, fresh processes)
      python3 -m bench.cli_vs_kernelbench --kernelbench "${KERNELBENCH:-shared/kernelbench}" --repeats 2 --out "$OUT" ${CLI_VS_KB_ARGS:-} 2>&1 | tee "$OUT/cli-vs-kernelbench.log" || status=1 ;;
    kb_sizes) # <= 9.5 min: matmul, relu, sum, softmax at published sizes; every evaluation is killed at 560 s at the latest
      python3 -m bench.kernelbench_sizes --kernelbench "${KERNELBENCH:-shared/kernelbench}" --budget-s 560 --timeout-s 240 --out "$OUT" ${KB_SIZES_ARGS:-} 2>&1 | tee "$OUT/kernelbench-sizes.log" || status=1 ;;
    *) echo "unknown step $step"; status=1 ;;
  esac
done
echo "=== done $(date +%T)"
exit $status
