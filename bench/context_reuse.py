"""What reusing the context encoding across keystrokes costs in quality and buys in time.

Typing is simulated on the development set of unseen code (bench/dev_infill.py): for each task the
context with the line empty is encoded in full (the base), then the user types a third and two
thirds of the line and asks for the rest at each point. Each request runs twice on the same model:
with the context encoded in full, and built from the base (model/context_reuse.py). Reports how
often the two fills are identical, exact match of each against the real rest of the line, and the
median context-encoding time of each.

    python bench/context_reuse.py --n 150 --out bench/results/context_reuse.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import infill_runner as R
from dev_infill import make_tasks

from model import cpu_threads
from model.infill import load_infiller
from model.interface import PRECISIONS, Hole, InfillRequest


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--precision", default="auto", choices=PRECISIONS)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads; 0: automatic, as the server"
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/context_reuse.json"))
    a = ap.parse_args()
    m = load_infiller(precision=a.precision)
    cpu_threads.apply(m, a.threads)  # 0: automatic, as the server
    same = total = 0
    exact = {"full": 0, "reuse": 0}
    ms: dict[str, list[float]] = {"full": [], "reuse": []}
    reused = 0
    for pre, body, suf in make_tasks(a.n):
        m.reuse_context = True
        m.forget_contexts()
        m.infill(InfillRequest([pre, Hole(a.budget), suf]))  # the base: the line still empty
        for k in (len(body) // 3, 2 * len(body) // 3):
            req = InfillRequest([pre + body[:k], Hole(a.budget), suf])
            fills = {}
            for mode in ("full", "reuse"):
                m.reuse_context = mode == "reuse"
                bases = list(m.bases)
                fills[mode] = m.infill(req)[0].fills[0].split("\n")[0]
                m.bases = bases  # the full encode must not become a base of the reuse run
                ms[mode].append(m.last_timing["context_ms"])
                exact[mode] += fills[mode].strip() == body[k:].strip()
                if mode == "reuse":
                    reused += m.last_timing["context_reused"]
            same += fills["full"] == fills["reuse"]
            total += 1
    out = {
        "requests": total,
        "reused": reused,
        "identical_fill": round(same / total, 3),
        "exact_full": round(100 * exact["full"] / total, 1),
        "exact_reuse": round(100 * exact["reuse"] / total, 1),
        "context_ms_full": round(statistics.median(ms["full"]), 1),
        "context_ms_reuse": round(statistics.median(ms["reuse"]), 1),
        "run": R.run_info(m, a.threads),
    }
    print(json.dumps(out, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
