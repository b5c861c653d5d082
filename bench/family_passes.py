"""Passes a DreamOn-style fill takes: one token a pass (as the authors' sampler) against several
a pass by confidence (Parafill's default), on the tiny random DreamOn checkpoint of the reference
test (tests/fixtures/dreamon_reference.json: its builder arguments and its 12 cases).

Random weights say nothing about a trained model's quality; what this shows is the mechanism:
how many passes each commit rule spends on the same canvases, and whether the fills stay the
same. A trained model is far more confident than a random one, so it commits more a pass.

    python bench/family_passes.py            # prints a table, writes bench/results/family_passes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from family_checkpoints import build_dream

from model.families.infiller import FamilyInfiller
from model.interface import Hole, InfillRequest

RULES = [("one a pass (reference)", 1, None)] + [
    (f"threshold {t}", None, t) for t in (0.9, 0.7, 0.5, 0.3)
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "family_passes.json"))
    a = ap.parse_args()
    ref = json.loads((ROOT / "tests" / "fixtures" / "dreamon_reference.json").read_text())
    ck = ref["checkpoint"]
    path = build_dream(
        Path(tempfile.mkdtemp()) / "dreamon", variant=ck["variant"], seed=ck["seed"], **ck["build"]
    )
    inf = FamilyInfiller(path, "cpu", "fp32")
    rows = []
    for name, per_step, threshold in RULES:
        passes = tokens = same = 0
        for case in ref["cases"]:
            inf.defaults = replace(inf.defaults, top_p=case.get("top_p"))
            req = InfillRequest(
                [case["prefix"], Hole(64), case["suffix"]],
                tokens_per_step=per_step,
                threshold=threshold,
            )
            out = inf.grow(req, inf.layout(req))
            passes += out.steps_used
            tokens += len(out.rows[0][0])
            same += out.rows[0][0] == case["middle_ids"]
        rows.append({"rule": name, "passes": passes, "tokens": tokens, "same_as_reference": same})
    n = len(ref["cases"])
    print(
        f"{'commit rule':26} {'passes':>7} {'tokens':>7} {'tok/pass':>8}  same fill as the reference"
    )
    for r in rows:
        print(
            f"{r['rule']:26} {r['passes']:7d} {r['tokens']:7d} {r['tokens'] / r['passes']:8.2f}"
            f"  {r['same_as_reference']}/{n}"
        )
    Path(a.out).write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "checkpoint": "tiny random DreamOn (tests/fixtures/dreamon_reference.json)",
                "cases": n,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
