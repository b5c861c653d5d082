"""Milliseconds per completion of the shipped model: fill size x context size x schedule x cache.

Contexts are real code read at run time from the running interpreter's standard library (a few
files, a hole at a code line near the middle of each): a single-line fill as the server requests
one (the rest of a line after its indentation, a Hole of --line-budget tokens flagged
single-line, so a line break ends it) and a multi-line fill (four lines, --block-budget tokens),
with prefix and suffix trimmed by whole lines to about 3/4 and 1/4 of the context size.
The multi-line sizes stop at 384 tokens: the window is 512 and the hole takes 128.

Cache on is the shipped path, `infiller.infill` (context K/V encoded once, each step a forward
over the span only; for a block, over a region of 16 slots with the rest of the span's K/V from
the last full step, model/span_step.py, against "wholespan" where every step runs the span). Cache off recomputes the full forward over context + span at every step under
the same group layout (bench/infill_runner.py). A cache-off cell whose cached run took more than
--max-uncached-passes forward passes in total is estimated as passes x one full forward, not run,
and flagged. Every schedule and the one-token-per-step baseline (ltr) run in the same process, on
the same samples, one model thread (--threads; 0 is the server's automatic setting, where a full
context encode of the cache-on path also takes the idle cores, model/cpu_threads.py); medians
over the samples, ratios against ltr.

    .venv/bin/python bench/latency.py            # about 7 minutes on the shared 2-core machine
    .venv/bin/python bench/latency.py --samples 2 --sizes 64,256
    .venv/bin/python bench/latency.py --kinds single-line --threads 0 --out ...   # lines only
Results: bench/results/latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sysconfig
import time
from dataclasses import replace
from pathlib import Path

import infill_runner as R
import torch

from model import cpu_threads
from model.interface import Hole, InfillRequest

ROOT = R.ROOT
FILES = ("textwrap.py", "argparse.py", "shlex.py", "difflib.py", "json/encoder.py", "fractions.py")
SCHEDULES = (
    ("ltr", "ltr", None, None),
    # the infiller's defaults: lines with the length signal (model/length.py: threshold 0.7),
    # blocks at 0.7; and lines without it (the PAD budget alone, threshold 0.9: the old default)
    ("default", "threshold", None, None),
    ("default-padbudget", "threshold", None, None, {"length_estimate": False}),
    ("thr0.9", "threshold", None, 0.9),
    ("thr0.7", "threshold", None, 0.7),  # the default for blocks
    # blocks without the span block steps (model/span_step.py): every step runs the whole span
    ("thr0.7-wholespan", "threshold", None, 0.7, {"span_block": None}),
    ("fixed2", "fixed", 2, None),
    ("fixed4", "fixed", 4, None),
    ("fixed8", "fixed", 8, None),
)


def samples(m, n: int, ctx_tokens: int, hole_lines: int) -> list[tuple[str, str]]:
    """(prefix, suffix) pairs around `hole_lines` code lines near the middle of stdlib files."""
    out = []
    for name in FILES[:n]:
        lines = (Path(sysconfig.get_paths()["stdlib"]) / name).read_text().splitlines(True)
        i = len(lines) // 2
        while not (lines[i].startswith("        ") and lines[i].strip()[:1].isalpha()):
            i += 1
        pre, suf = lines[:i], lines[i + hole_lines :]
        a, b = len(pre), 0
        while a > 0 and m.count_tokens("".join(pre[a - 1 :])) <= ctx_tokens * 3 // 4:
            a -= 1
        while b < len(suf) and m.count_tokens("".join(suf[: b + 1])) <= ctx_tokens // 4:
            b += 1
        prefix, suffix = "".join(pre[a:]), "".join(suf[:b])
        if hole_lines == 1:  # as the server plans a line: the rest of it after the indentation
            line = lines[i]
            indent = line[: len(line) - len(line.lstrip())]
            prefix, suffix = prefix + indent, "\n" + suffix
        out.append((prefix, suffix))
    return out


def full_forward_ms(m, p: R.Prepared) -> float:
    lay = p.layout
    ids = torch.tensor([lay.ctx_ids + [m.tok.mask_id] * len(lay.span_pos)], device=m.device)
    pos = torch.tensor([lay.ctx_pos + lay.span_pos], device=m.device)
    grp = torch.tensor([[0] * len(lay.ctx_ids) + [1] * len(lay.span_pos)], device=m.device)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            t0 = time.perf_counter()
            m.net(ids, pos, grp)
            best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def measure(m, kind: str, budget: int, size: int, pairs, max_passes: int) -> list[dict]:
    rows = []
    for label, sched, steps, thr, *rest in SCHEDULES:
        overrides = dict(rest[0]) if rest else {}  # DecodeOptions fields for this schedule
        length = overrides.pop("length_estimate", True)  # a request field, for lines only
        options = replace(m.options, **overrides) if overrides else None
        if kind != "multi-line" and overrides:
            continue  # infiller settings that only change long holes
        if kind == "multi-line" and not length:
            continue  # the length signal is for line holes only
        on, off, passes, toks, ctx_ms, ctx_len, same, estimated = [], [], [], [], [], [], 0, 0
        for prefix, suffix in pairs:
            segs = [prefix, Hole(max_tokens=budget, single_line=kind == "single-line"), suffix]
            req = InfillRequest(
                segments=segs,
                schedule=sched,
                steps=steps,
                threshold=thr,
                seed=0,
                length_estimate=length,
            )
            t0 = time.perf_counter()
            r = m.infill(req, options=options)[0]
            on.append((time.perf_counter() - t0) * 1e3)
            ctx_ms.append(m.last_timing["context_ms"])
            passes.append(r.steps_used)
            toks.append(r.tokens)
            p = R.prepare(m, segs)
            ctx_len.append(len(p.layout.ctx_ids))
            if r.steps_used > max_passes:
                off.append(r.steps_used * full_forward_ms(m, p))
                estimated += 1
                continue
            cfg = R.denoise_config(sched, steps, thr)
            f = R.fill_uncached(m, p, cfg, length=length and sched != "ltr")
            off.append(f.ms)
            same += f.fills == r.fills
        rows.append(
            {
                "fill": kind,
                "budget": budget,
                "context_target": size,
                "context_tokens": statistics.median(ctx_len),
                "schedule": label,
                "samples": len(pairs),
                "ms_cache_on": statistics.median(on),
                "ms_cache_off": statistics.median(off),
                "cache_off_estimated": estimated,
                "cache_off_same_fill": same,
                "context_ms": statistics.median(ctx_ms),
                "forward_passes": statistics.median(passes),
                "tokens": statistics.median(toks),
                "tokens_per_pass": sum(toks) / max(1, sum(passes)),
            }
        )
    ltr = rows[0]
    for r in rows:
        r["ratio_on_vs_ltr_on"] = r["ms_cache_on"] / ltr["ms_cache_on"]
        r["ratio_off_vs_ltr_off"] = r["ms_cache_off"] / ltr["ms_cache_off"]
        r["speedup_cache"] = r["ms_cache_off"] / r["ms_cache_on"]
    return rows


def markdown(rows: list[dict]) -> str:
    out = [
        (
            "| fill | ctx tokens | schedule | passes | tokens | tok/pass | ms cache on | vs ltr "
            "| ms cache off | vs ltr | cache speedup |"
        ),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        est = "*" if r["cache_off_estimated"] else ""
        out.append(
            f"| {r['fill']} ({r['budget']}) | {r['context_tokens']:.0f} | {r['schedule']} "
            f"| {r['forward_passes']:.0f} | {r['tokens']:.0f} | {r['tokens_per_pass']:.2f} "
            f"| {r['ms_cache_on']:.0f} | {r['ratio_on_vs_ltr_on']:.2f} "
            f"| {r['ms_cache_off']:.0f}{est} | {r['ratio_off_vs_ltr_off']:.2f} "
            f"| {r['speedup_cache']:.1f}x |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,256,480", help="context sizes in tokens")
    ap.add_argument("--samples", type=int, default=3, help="stdlib files sampled (at most 6)")
    ap.add_argument("--line-budget", type=int, default=24, help="the server's lineBudget")
    ap.add_argument("--block-budget", type=int, default=128)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads; 0: automatic, as the server"
    )
    ap.add_argument("--kinds", default="single-line,multi-line", help="fill kinds measured")
    ap.add_argument("--max-uncached-passes", type=int, default=40)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench/results/latency.json"))
    args = ap.parse_args()

    from model.infill import load_infiller

    t_start = time.perf_counter()
    m = load_infiller(args.weights)
    cpu_threads.apply(m, args.threads)  # 0: automatic, as the server
    m.reuse_context = False  # every request encodes its context (reuse: bench/context_reuse.py)
    m.infill(InfillRequest(segments=["def f(x):\n", Hole(8), "\n"], schedule="threshold"))  # warm
    rows = []
    for kind, budget, hole_lines in (
        ("single-line", args.line_budget, 1),
        ("multi-line", args.block_budget, 4),
    ):
        if kind not in args.kinds.split(","):
            continue
        for size in (int(s) for s in args.sizes.split(",")):
            size = min(size, m.max_len - budget)
            pairs = samples(m, args.samples, size, hole_lines)
            rows += measure(m, kind, budget, size, pairs, args.max_uncached_passes)
            print(f"[{time.perf_counter() - t_start:5.0f}s] {kind} ctx {size} done", flush=True)
    report = {
        **R.run_info(m, args.threads),
        "load_average": os.getloadavg(),
        "files": list(FILES[: args.samples]),
        "wall_s": time.perf_counter() - t_start,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(markdown(rows))
    print(f"\n* estimated: forward passes x one full forward. wrote {out}")


if __name__ == "__main__":
    main()
