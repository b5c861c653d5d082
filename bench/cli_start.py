"""How long `parafill complete` takes from the shell, start-up included (#17: a CLI that starts fast).

Runs `python -m lsp_server.cli complete FILE:LINE:COL` on a small file N times for each source
tree given (this checkout, and for example a worktree of an older commit), interleaved so that
both see the same machine load, and reports the median and the spread of the wall time, with the
fill each printed (they should agree).

    git worktree add /tmp/parafill-old <rev>
    python bench/cli_start.py --tree . --tree /tmp/parafill-old --runs 10
Results: bench/results/cli_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "def area(width, height):\n    return \n"


def one_run(tree: Path, target: str) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "lsp_server.cli", "complete", target]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: exit {proc.returncode}: {proc.stderr[-500:]}")
    return wall, proc.stdout


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", action="append", default=None, help="source tree (repeatable)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cli_start.json"))
    args = ap.parse_args(argv)
    trees = [Path(t).resolve() for t in (args.tree or [ROOT])]
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.py"
        probe.write_text(PROBE)
        target = f"{probe}:2:12"
        for tree in trees:
            one_run(tree, target)  # warm the page cache once each
        walls: dict[str, list[float]] = {str(t): [] for t in trees}
        fills: dict[str, set[str]] = {str(t): set() for t in trees}
        for _ in range(args.runs):
            for tree in trees:
                wall, fill = one_run(tree, target)
                walls[str(tree)].append(wall)
                fills[str(tree)].add(fill)
    rows = {}
    for tree in trees:
        w = sorted(walls[str(tree)])
        rows[str(tree)] = {
            "median_s": round(statistics.median(w), 3),
            "min_s": round(w[0], 3),
            "max_s": round(w[-1], 3),
            "runs": w,
            "fills": sorted(fills[str(tree)]),
        }
        print(f"{tree}: median {rows[str(tree)]['median_s']} s (min {w[0]:.2f}, max {w[-1]:.2f})")
    load = os.getloadavg()
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "loadavg_after": [round(x, 2) for x in load],
        "trees": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
