#!/usr/bin/env bash
# Set up (.venv) and run the main job on the shipped model: complete the missing line of
# examples/demo.py at line 10, column 17 (1-based), showing the span after each denoising step,
# then fill two marked holes at once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
echo "== parafill complete examples/demo.py:10:17 --show-steps" >&2
parafill complete examples/demo.py:10:17 --show-steps
echo >&2
echo "== parafill fill (two holes at once)" >&2
tmp=$(mktemp --suffix=.py)
printf 'def area(width, height):\n    return <|fill|>\n\n\ndef perimeter(width, height):\n    return <|fill|>\n' > "$tmp"
parafill fill "$tmp"
rm -f "$tmp"
