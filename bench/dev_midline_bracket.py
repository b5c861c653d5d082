"""Development set: typing an argument mid-line (or, with --line-start, beginning a line) inside a
bracket whose closer is on a later line.

Which plan serves that cursor better: the bracket's multi-line region (48 tokens, decoded in a
sliding window with the end at the frontier, threshold 0.7: the block/statement rule) or the rest
of the line (24 tokens flagged single-line, the confident end at threshold 0.9: the line rule)?
Tasks come from files the training corpus excludes by name (dev_infill.unseen_files: not
HumanEval); each hides the rest of one line after a random point inside its code, kept where the
planner finds the cursor inside such a bracket. Both plans go through the server's pipeline
(build_request, the stop rules, region_candidates); the suggestion's first line is compared with
the hidden rest of the line. The context is encoded once per task before either runs (reused
exactly by both), so the times are the denoising.

    python bench/dev_midline_bracket.py --n 150 --out bench/results/dev_midline_bracket.json
"""

from __future__ import annotations

import argparse
import difflib
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import infill_runner as R
import numpy as np
from dev_infill import unseen_files

from lsp_server.config import Settings
from lsp_server.pipeline import build_request, region_candidates
from lsp_server.planner import BRACKET, Budgets, InfillPlan, StopRules, plan_completion
from lsp_server.syntax import Snapshot, parse
from model import cpu_threads
from model.infill import load_infiller

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = Budgets()
PLANS = {  # name -> (budget, stop rules) of the region at the cursor
    "multi-line bracket (48, frontier, window 8, thr0.7)": (
        BUDGETS.statement,
        StopRules(inside_bracket=True),
    ),
    "rest of the line (24, single-line, confident end, thr0.9)": (
        BUDGETS.bracket,
        StopRules(single_line=True, inside_bracket=True),
    ),
    "rest of the line, decoded as a long hole (48, single-line, frontier, window 8, thr0.7)": (
        BUDGETS.statement,
        StopRules(single_line=True, inside_bracket=True),
    ),
}


def make_tasks(
    n: int, seed: int, line_start: bool = False
) -> list[tuple[str, int, str, InfillPlan]]:
    """(text with the rest of a line hidden, cursor, hidden text, the planner's plan there).
    With `line_start` the whole line after its indentation is hidden (a line begun after Enter)."""
    rng = np.random.default_rng(seed)
    files = [f for f in unseen_files() if 2_000 < f.stat().st_size < 400_000]
    tasks = []
    for _ in range(200 * n):
        if len(tasks) == n:
            break
        text = files[int(rng.integers(len(files)))].read_text(errors="replace")
        lines = text.split("\n")
        i = int(rng.integers(len(lines)))
        line, content = lines[i], lines[i].strip()
        if len(content) < 8 or content.startswith(("#", '"', "'")):
            continue
        k = (
            len(line)
            - len(line.lstrip())
            + (0 if line_start else int(rng.integers(1, len(content))))
        )
        hidden = line[k:].rstrip()
        start = sum(len(x) + 1 for x in lines[:i])
        cursor = start + k
        new = text[:cursor] + text[start + len(line) :]
        plan = plan_completion(new, cursor, "python", Snapshot(new, parse(new, "python"), "python"))
        # nothing follows the cursor on its line, so a bracket region here closes on a later line
        if hidden.strip() and plan.kind == BRACKET:
            tasks.append((new, cursor, hidden, plan))
    return tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--line-start", action="store_true", help="the cursor at a line's start, not mid-line"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: automatic)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/dev_midline_bracket.json")
    a = ap.parse_args()
    m = load_infiller()
    cpu_threads.apply(m, a.threads)
    tasks = make_tasks(a.n, a.seed, a.line_start)
    rows = {name: {"exact": 0, "sim": [], "passes": [], "ms": []} for name in PLANS}
    for text, _cursor, hidden, plan in tasks:
        m.forget_contexts()
        m.infill(build_request(plan, text, Settings()))  # encode the context once
        for name, (budget, stop) in PLANS.items():
            p = replace(plan, regions=[replace(plan.regions[0], budget=budget, stop=stop)])
            req = build_request(p, text, Settings())
            t = time.perf_counter()
            out = m.infill(req)
            ms = (time.perf_counter() - t) * 1e3
            cands = region_candidates(p, text, out)
            got = (cands[0].text if cands else "").split("\n")[0].strip()
            r = rows[name]
            r["exact"] += got == hidden.strip()
            r["sim"].append(difflib.SequenceMatcher(None, got, hidden.strip()).ratio())
            r["passes"].append(out[0].steps_used)
            r["ms"].append(ms)
    n = len(tasks)
    results = {
        name: {
            "exact_match": round(100 * r["exact"] / n, 1),
            "edit_similarity": round(statistics.mean(r["sim"]), 3),
            "mean_passes": round(statistics.mean(r["passes"]), 2),
            "median_ms": round(statistics.median(r["ms"]), 1),
            "p95_ms": round(float(np.percentile(r["ms"], 95)), 1),
        }
        for name, r in rows.items()
    }
    where = "at a line start" if a.line_start else "mid-line"
    print(f"{n} tasks ({where}, inside a bracket that closes on a later line)")
    print("| plan | exact % | edit sim | passes | median ms | p95 ms |\n|---|---|---|---|---|---|")
    for name, v in results.items():
        print(
            f"| {name} | {v['exact_match']} | {v['edit_similarity']} | {v['mean_passes']} "
            f"| {v['median_ms']} | {v['p95_ms']} |"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    info = {"n": n, "seed": a.seed, "line_start": a.line_start, **R.run_info(m, a.threads)}
    info["results"] = results
    a.out.write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
