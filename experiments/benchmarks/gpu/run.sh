#!/usr/bin/env bash
# The prepared GPU check (see README.md next to this file): static, dynamic_mix ODM, dynamic_select LESS and
# dynamic_weight loss on a ~100M-parameter LLaMA (32k vocab, bf16), plain loss vs chunked/fused loss with
# gradient checkpointing; one table of steps/s, tokens/s, peak GPU memory and failures.
#   bash experiments/benchmarks/gpu/run.sh [OUT_DIR]           # one CUDA GPU, at most 8 minutes
#   DRY_RUN=1 bash experiments/benchmarks/gpu/run.sh [OUT_DIR] # CPU dry run: tiny shapes, 2 steps per job
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-${OUT:-/tmp/dataflex_gpu_check}}"
limit="${GPU_CHECK_LIMIT_S:-470}"   # leave the 8-minute budget some room for start-up and the table
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" TOKENIZERS_PARALLELISM=false WANDB_MODE="${WANDB_MODE:-offline}"
export HF_HUB_OFFLINE=1
mkdir -p "$out"
args=(--out "$out")
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  args+=(--dry-run)
fi
status=0
timeout --signal=TERM "$limit" python "$here/bench.py" "${args[@]}" "${@:2}" || status=$?
if [[ $status -eq 124 ]]; then
  echo "gpu check: stopped at the ${limit}s limit; the table holds the jobs that finished" >&2
fi
[[ -f "$out/results.md" ]] && cat "$out/results.md"
exit $status
