#!/usr/bin/env bash
# The prepared GPU recipe: one command on one lent H100/H200 (16 cores, Python 3.12, torch,
# tokenizers, safetensors, numpy, no network). Builds the corpus from that machine's own installed
# packages with the shipped tokenizer (decontaminated against HumanEval infilling by the shipped
# marks, training/decontam_marks.json; BENCH=DIR reads raw task files instead), trains or
# continues training model/weights within a wall-clock budget, and writes the weights to
# $OUT/weights in bf16 shards under 16 MiB each.
#
#   BUDGET_S=540 bash training/gpu_recipe.sh          # the whole recipe's wall clock, data included
#   SMOKE=1 bash training/gpu_recipe.sh               # small corpus, eager vs compiled throughput
#   EXPAND=1 bash training/gpu_recipe.sh              # DreamOn's expand and delete objective
#                                                    # (training/expand.py): off by default
#   REPO=1 bash training/gpu_recipe.sh                # repository-level samples too: off by default
#
# REPO=1 adds repository-level infill examples (training/repo_samples.py: a file's holes with its
# package's imported definitions packed ahead of the prefix as the language server packs them),
# REPO_PER_KB (default 0.1) per KB of each file importing from its own package, written into the
# infill shard. They need tree-sitter and its Python grammar, which the GPU machine lacks and
# cannot download (no network): prepare them here, once, into the ignored wheelhouse `.whl/`,
#   .venv/bin/pip download --python-version 3.12 --only-binary=:all: \
#     --platform manylinux2014_x86_64 -d .whl tree-sitter==0.26.1 tree-sitter-python==0.25.0
# and name `.whl` in the device tool's `carry` (0.8 MB); the recipe unpacks the wheels into
# /tmp/pf_site and puts it on PYTHONPATH (no pip, nothing installed). Without them the recipe says
# so and carries on without repository-level samples.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
OUT=${OUT:-$PWD/out}
BUDGET=${BUDGET_S:-540}
BENCH_ARGS=()
[ -n "${BENCH:-}" ] && BENCH_ARGS=(--bench "$BENCH")
DATA=${DATA:-/tmp/pf_data}
NPROC=$(nproc)
EXPAND_ARGS=()
[ "${EXPAND:-0}" = 1 ] && EXPAND_ARGS=(--expand-delete)
REPO_ARGS=()
if [ "${REPO:-0}" = 1 ]; then
  HAS_TS="import tree_sitter, tree_sitter_python; from lsp_server import syntax; assert syntax.get_language('python')"
  if ! python3 -c "$HAS_TS" 2>/dev/null && ls "${WHEELS:-.whl}"/tree_sitter*.whl >/dev/null 2>&1; then
    for w in "${WHEELS:-.whl}"/tree_sitter*.whl; do python3 -m zipfile -e "$w" /tmp/pf_site; done
    export PYTHONPATH="/tmp/pf_site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if python3 -c "$HAS_TS" 2>/dev/null; then
    REPO_ARGS=(--repo-per-kb "${REPO_PER_KB:-0.1}")
    echo "[recipe] repository-level samples on (--repo-per-kb ${REPO_PER_KB:-0.1})"
  else
    echo "[recipe] WARNING: REPO=1 but tree-sitter / tree-sitter-python cannot be imported and" \
      "no wheels in ${WHEELS:-.whl}/ (see this script's header): carrying on WITHOUT" \
      "repository-level samples" >&2
  fi
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
mkdir -p "$OUT"
if [ "${SMOKE:-0}" = 1 ]; then
  python3 -m training.data --out "$DATA" --workers "$NPROC" "${BENCH_ARGS[@]}" --max-bytes 20000000 --infill-per-kb 0.4 "${REPO_ARGS[@]}"
  echo "[recipe] data built at +$(( $(date +%s) - T0 ))s"
  python3 -m training.train --data "$DATA" --out "$OUT/smoke_eager" --minutes 0.4 --batch 256 --log-every 10 --eval-every 15 "${EXPAND_ARGS[@]}"
  echo "[recipe] eager done at +$(( $(date +%s) - T0 ))s"
  python3 -m training.train --data "$DATA" --out "$OUT/smoke_compiled" --minutes 0.9 --batch 256 --log-every 10 --eval-every 30 --compile "${EXPAND_ARGS[@]}"
  echo "[recipe] compiled done at +$(( $(date +%s) - T0 ))s"
  rm -rf "$OUT"/smoke_*/*.safetensors
  exit 0
fi
RESUME=()
[ -f model/weights/config.json ] && RESUME=(--resume model/weights)
python3 -m training.data --out "$DATA" --workers "$NPROC" "${BENCH_ARGS[@]}" \
  --max-bytes "${MAX_BYTES:-350000000}" --infill-per-kb "${INFILL_PER_KB:-0.4}" "${REPO_ARGS[@]}"
cp "$DATA/stats.json" "$OUT/corpus_stats.json"
echo "[recipe] data built at +$(( $(date +%s) - T0 ))s"
python3 -m training.train --data "$DATA" --out "$OUT/weights" "${RESUME[@]}" "${EXPAND_ARGS[@]}" \
  --deadline $(( T0 + BUDGET - 20 )) --minutes 600 --batch "${BATCH:-256}" --lr "${LR:-2e-3}" \
  --full-frac "${FULL_FRAC:-0.5}" --save-every 90 --eval-every 45 --log-every 50 ${TRAIN_ARGS:-}
echo "[recipe] finished at +$(( $(date +%s) - T0 ))s"
# the shipped tokenizer, or with EXPAND=1 the shipped one grown by <|expand|>, which
# `python -m training.expand tokenizer DIR` writes again (the device returns 8 files at most)
rm -f "$OUT/weights/tokenizer.json"
ls -la "$OUT" "$OUT/weights"
