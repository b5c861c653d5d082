"""Development set for sampler defaults: single-line infilling on code the model never saw.

Lines are drawn (deterministically) from installed packages that the corpus builder excludes by
name (training.data.EVAL_EXCLUDE_PACKAGES: pygls, lsprotocol, ...), so choices made here are not tuned
on HumanEval. Each task hides the rest of one line after its indentation; the context is the file
around it. Reports exact match, forward passes and tokens per pass for each sampler setting.

    python bench/dev_infill.py --n 150 --out bench/results/dev_infill.json
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from model import cpu_threads
from model.codetext import cut_to_scope
from model.infill import load_infiller
from model.interface import PRECISIONS, Hole, InfillRequest, StopRules
from model.layout import trim_context
from training.data import EVAL_EXCLUDE_PACKAGES

# (the experiments that were tried and not kept, with their results: docs/length.md)
CONFIGS = {  # threshold configs for single lines take the infiller's default ("confident" end)
    "ltr": {"schedule": "ltr"},
    "threshold-0.9": {"schedule": "threshold", "threshold": 0.9},
    "threshold-0.9-frontier": {"schedule": "threshold", "threshold": 0.9, "pad_at_frontier": True},
    "threshold-0.7-frontier": {"schedule": "threshold", "threshold": 0.7, "pad_at_frontier": True},
    "threshold-0.5-frontier": {"schedule": "threshold", "threshold": 0.5, "pad_at_frontier": True},
    "threshold-0.7": {"schedule": "threshold", "threshold": 0.7},
    "len-0.7": {"schedule": "threshold", "threshold": 0.7, "length_every_line": True},
    # threshold 0.9 within at most K passes (each pass commits at least a share of what is left)
    "threshold-0.9-s4": {"schedule": "threshold", "threshold": 0.9, "steps": 4},
    "threshold-0.9-s6": {"schedule": "threshold", "threshold": 0.9, "steps": 6},
    "fixed-4": {"schedule": "fixed", "steps": 4},
    "window8-0.9-anypad": {
        "schedule": "threshold",
        "threshold": 0.9,
        "window": 8,
        "pad_at_frontier": False,
    },
    "window8-0.9": {
        "schedule": "threshold",
        "threshold": 0.9,
        "window": 8,
        "pad_at_frontier": True,
    },
    "window8-0.7": {
        "schedule": "threshold",
        "threshold": 0.7,
        "window": 8,
        "pad_at_frontier": True,
    },
}


# a config's fields that are the infiller's DecodeOptions, not the request's (pad_at_frontier
# is the request's end_rule)
DECODE_OPTIONS = (
    "pad_run",
    "window",
    "length_every_line",
    "length_step",
)


def unseen_files() -> list[Path]:
    out = []
    for name in EVAL_EXCLUDE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                out += sorted(Path(loc).rglob("*.py"))
    return out


def after_opener(line: str) -> int | None:
    """Index just after the line's first bracket opener that closes later on the same line
    with at least 3 characters between (a statement the editor would fill as left open)."""
    for i, ch in enumerate(line):
        if ch in "([{":
            depth = 0
            for j in range(i, len(line)):
                depth += line[j] in "([{"
                depth -= line[j] in ")]}"
                if depth == 0:
                    return i + 1 if j - i > 3 else None
            return None
    return None


def make_tasks(
    n: int, seed: int = 0, n_lines: int = 1, after_open: bool = False
) -> list[tuple[str, str, str]]:
    """(prefix, hidden text, suffix) tasks: the rest of `n_lines` lines after the indentation,
    or with `after_open` the rest of one line after its first bracket opener (the planner's
    statement region: the bracket left open, nothing after the cursor)."""
    rng = np.random.default_rng(seed)
    files = [f for f in unseen_files() if 2_000 < f.stat().st_size < 400_000]
    tasks = []
    while len(tasks) < n and files:
        text = files[int(rng.integers(len(files)))].read_text(errors="replace")
        lines = text.split("\n")
        i = int(rng.integers(max(1, len(lines) - n_lines)))
        line = lines[i]
        if len(line.strip()) < 6 or line.strip().startswith(("#", '"', "'")):
            continue
        block = lines[i : i + n_lines]
        if n_lines > 1 and sum(bool(x.strip()) for x in block) < n_lines:
            continue
        ind = len(line) - len(line.lstrip())
        if after_open:
            k = after_opener(line)
            if k is None or line.lstrip().startswith(("def ", "class ")):
                continue
            if any(q in line[:k] for q in "\"'") or line.rstrip().endswith(":"):
                continue  # inside a string; a header (the block rules apply there)
            ind = k
        body = "\n".join(block)[ind:]
        pre = "\n".join(lines[:i] + [line[:ind]])
        suf = "\n" + "\n".join(lines[i + n_lines :])
        tasks.append((pre[-3000:], body, suf[:1500]))
    return tasks


def _trim(tok, task: tuple[str, str, str], room: int) -> tuple[str, str, str]:
    """The task with its prefix and suffix cut to `room` tokens the way the infiller cuts them."""
    pre, body, suf = task
    p, s = tok.encode_pieces([pre, suf])
    p, s = trim_context(p, s, room)
    return tok.decode(p), body, tok.decode(s)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--lines", type=int, default=1, help="hide this many lines (1: single-line)")
    ap.add_argument(
        "--after-open",
        action="store_true",
        help="hide the rest of a line after its first bracket opener (a statement fill)",
    )
    ap.add_argument(
        "--scope-ends",
        action="store_true",
        help="with --after-open: stop denoising once the bracket has closed (as the server does)",
    )
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--out", type=Path, default=Path("bench/results/dev_infill.json"))
    ap.add_argument("--precision", default="auto", choices=PRECISIONS)
    ap.add_argument(
        "--context-tokens",
        type=int,
        default=None,
        help="keep this many context tokens (default: the model's window)",
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads; 0: automatic, as the server"
    )
    ap.add_argument("--weights", default=None, help="checkpoint directory (default: shipped)")
    ap.add_argument(
        "--span-block",
        type=int,
        default=-1,
        help="slots a windowed step runs (model/span_step.py); 0: the whole span; -1: default",
    )
    ap.add_argument(
        "--fresh-ends",
        action="store_true",
        help="run the PADs after a fill's end at every step (model/span_step.py's stale_ends off)",
    )
    a = ap.parse_args()
    m = load_infiller(a.weights, precision=a.precision)
    cpu_threads.apply(m, a.threads)  # 0: automatic, as the server
    base = replace(m.options, stale_ends=not a.fresh_ends)
    if a.span_block >= 0:
        base = replace(base, span_block=a.span_block or None)
    tasks = make_tasks(a.n, n_lines=a.lines, after_open=a.after_open)
    if a.context_tokens:
        tasks = [_trim(m.tok, t, a.context_tokens) for t in tasks]
    statement = StopRules(open_brackets=1)  # the planner's rule for a bracket left open
    # the server's stop rules: the backend stops once the bracket has closed (or on repetition)
    stop = statement if a.scope_ends and a.after_open else None
    rows = {}
    for name in a.configs:
        c = dict(CONFIGS[name])
        options = replace(base, **{k: c.pop(k) for k in DECODE_OPTIONS if k in c})
        if "pad_at_frontier" in c:
            c["end_rule"] = "frontier" if c.pop("pad_at_frontier") else "confident"
        em, em1, steps, toks, ratio, ms, sim = 0, 0, [], [], [], [], []
        for pre, body, suf in tasks:
            t = time.perf_counter()
            hole = Hole(a.budget, single_line=a.lines == 1 and not a.after_open, stop=stop)
            r = m.infill(InfillRequest([pre, hole, suf], **c), options=options)[0]
            ms.append((time.perf_counter() - t) * 1e3)
            fill = r.fills[0]
            if a.after_open:  # as the server cuts a statement: where the bracket closes
                fill = cut_to_scope(fill, statement)
            elif a.lines == 1:
                fill = fill.split("\n")[0]
            em += fill.strip() == body.strip()
            em1 += fill.strip().split("\n")[0].strip() == body.strip().split("\n")[0].strip()
            sim.append(difflib.SequenceMatcher(None, fill.strip(), body.strip()).ratio())
            steps.append(r.steps_used)
            toks.append(r.tokens)
            ratio.append(r.tokens / max(1, m.count_tokens(body)))
        rows[name] = {
            "exact_match": round(100 * em / len(tasks), 1),
            "first_line_exact": round(100 * em1 / len(tasks), 1),
            "edit_similarity": round(statistics.mean(sim), 3),
            "tokens_over_oracle": round(statistics.median(ratio), 2),
            "mean_passes": round(statistics.mean(steps), 2),
            "tokens_per_pass": round(sum(toks) / max(1, sum(steps)), 2),
            "median_ms": round(statistics.median(ms), 1),
            "p95_passes": int(np.percentile(steps, 95)),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
        }
        print(name, rows[name], flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "n": len(tasks),
                "lines": a.lines,
                "after_open": a.after_open,
                "scope_ends": stop is not None,
                "budget": a.budget,
                "span_block": base.span_block,
                "stale_ends": base.stale_ends,
                "results": rows,
            },
            indent=2,
        )
    )
    print(
        "| config | exact % | first line exact % | edit sim | tokens / oracle | passes | tokens/pass | median ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k, v in rows.items():
        print(
            f"| {k} | {v['exact_match']} | {v['first_line_exact']} | {v['edit_similarity']} | {v['tokens_over_oracle']} | "
            f"{v['mean_passes']} | {v['tokens_per_pass']} | {v['median_ms']} |"
        )


if __name__ == "__main__":
    main()
