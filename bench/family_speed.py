"""Speed of a published diffusion coder's passes and line fills, exact and with the dual cache.

Issue #22 item 6. A randomly initialised checkpoint of a published coder's real shape, written
in its published layout by tests/family_checkpoints.py (weights do not change speed), is loaded
through model/families (`FamilyInfiller`, as `load_infiller` does) and timed, every variant once
a round, rounds interleaved (each round starts one variant further on) so that the shared
machine's load hits all variants alike:

- pass/exact: one exact pass over a ~600-token window (prefix, 16 masked slots, suffix), per
  precision (CPU: fp32 and int8);
- pass/dual-context: the dual cache's first pass of a fill (an exact pass that also keeps the
  context's keys and values);
- pass/dual: a pass through the dual cache (the 16 slots, and the token before the hole where
  the family reads a slot's logits one position early, attending to the cached context), per
  precision;
- fill/...: a single-line fill as the language server asks for one (a real Python file's line,
  Hole(24, single_line=True, stop=StopRules(single_line=True)), ~600 tokens of prefix and
  suffix), exact and dual, with the default multi-token commits, with tokens_per_step=1, and
  with a fixed 4-pass schedule (a proxy for a trained model's line: random weights are never
  confident, so the default commits one token a pass and fills the whole budget);
- NAME@1t: some of these again at another torch thread count (--extra-threads, CPU only).

Defaults: the Open-dCoder-0.5B shape (Qwen2.5-0.5B) built with `build_open_dcoder`, CPU, 2 torch
threads, fp32 + int8, 7 rounds. On a GPU: `--device cuda --shape dream-7b --precision bf16`
(a Dream-Coder-layout 7B checkpoint; goal <= 25 ms a pass over 600 tokens). The checkpoint is
built once under --dir. Load time and RSS after load are measured in a fresh process per
precision. Writes JSON (after every round) and prints a table.

    .venv/bin/python bench/family_speed.py
    .venv/bin/python bench/family_speed.py --device cuda --shape dream-7b --precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results" / "family_speed.json"
DEFAULT_FILE = "lsp_server/planner.py"
DEFAULT_LINE = 240  # a statement line inside a function (1-based)
# which builder writes a shape's checkpoint, and the family name the loader is given
# ("tiny": the test suite's tiny shape, a smoke test of this script)
BUILDERS = {
    "open-dcoder-0.5b": "open-dcoder",
    "dream-7b": "dream-coder",
    "llada-8b": "llada",
    "tiny": "open-dcoder",
}
FAMILY = {"open-dcoder": "open-dcoder", "dream-coder": "dream", "llada": "llada"}


# ---------------------------------------------------------------------------------------- setup
def checkpoint(root: Path, shape: str, builder: str) -> Path:
    """The checkpoint directory, built once (a `.done` marker after a complete write)."""
    from tests.family_checkpoints import SHAPES, build_dream, build_llada, build_open_dcoder

    path = root / f"{builder}-{shape}"
    if (path / ".done").is_file():
        return path
    t0 = time.perf_counter()
    print(f"building {path} ({builder} layout, {shape} shape) ...", flush=True)
    dims = dict(SHAPES.get(shape, {}))
    if builder == "open-dcoder":
        build_open_dcoder(path, **dims)
    elif builder == "llada":
        build_llada(path, **dims)
    else:
        build_dream(path, variant=builder, **dims)
    (path / ".done").write_text("ok\n")
    print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def rss_mb() -> dict[str, float]:
    """This process's resident set now and at its peak (MB), from /proc."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rss_mb" if line.startswith("VmRSS") else "peak_rss_mb"] = (
                    int(line.split()[1]) / 1024
                )
    return out


def load_probe(args) -> None:
    """Child process: load one precision through load_infiller, print the time and RSS."""
    import torch

    torch.set_num_threads(args.threads)
    from model.infill import load_infiller

    before = rss_mb()["rss_mb"]
    t0 = time.perf_counter()
    inf = load_infiller(args.path, args.device, args.precision, family=args.family, cache="exact")
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    out = {"load_s": load_s, "rss_before_mb": before, **rss_mb(), "params": inf.params}
    if args.device.startswith("cuda"):
        out["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
    print("LOAD " + json.dumps(out), flush=True)


def load_stats(args, path: Path, family: str, precision: str) -> dict:
    cmd = [sys.executable, __file__, "--load-probe", "--path", str(path), "--family", family]
    cmd += ["--device", args.device, "--precision", precision, "--threads", str(args.threads)]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    for line in res.stdout.splitlines():
        if line.startswith("LOAD "):
            return json.loads(line[5:])
    return {"error": (res.stderr or res.stdout)[-2000:]}


def context_around(inf, text: str, line_no: int, tokens: int, ratio: float):
    """(prefix, suffix, the line's text) around 1-based `line_no`: the cursor after the line's
    indentation, the hole the rest of the line; whole lines added outward until the prefix and
    suffix hold about `tokens` tokens (`ratio` of them before the cursor), the nearest line cut
    by characters to land on the count."""
    lines = text.splitlines(keepends=True)
    line = lines[line_no - 1]
    indent = line[: len(line) - len(line.lstrip())]
    before = "".join(lines[: line_no - 1]) + indent
    after = "\n" + "".join(lines[line_no:])
    want_pre = int(tokens * ratio)
    pre = cut(inf, before, want_pre, keep_end=True)
    suf = cut(inf, after, tokens - inf.count_tokens(pre), keep_end=False)
    return pre, suf, line.strip()


def cut(inf, text: str, want: int, keep_end: bool) -> str:
    """The longest end (keep_end) or start of `text` with at most `want` tokens (bisection)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        piece = text[len(text) - mid :] if keep_end else text[:mid]
        if inf.count_tokens(piece) <= want:
            lo = mid
        else:
            hi = mid - 1
    return text[len(text) - lo :] if keep_end else text[:lo]


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    p90 = statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else xs[0]
    return {
        "n": len(xs),
        "median_ms": statistics.median(xs) * 1e3,
        "p90_ms": p90 * 1e3,
        "min_ms": xs[0] * 1e3,
        "max_ms": xs[-1] * 1e3,
    }


# ---------------------------------------------------------------------------------------- run
def pass_runner(inf, lay):
    """FamilyInfiller's step function for one request (rows of holes -> logits at the slots),
    exact or through the dual cache as `inf.cache` says when it is called."""
    if hasattr(inf, "passes"):
        return inf.passes(lay)
    return inf._passes(lay, 1)  # the first version of model/families/infiller.py


def variants(args, infs: dict, pass_req, fill_pre: str, fill_suf: str, sync):
    """name -> (a function running the variant once and returning what it reports, info)."""
    import torch

    from model.interface import Hole, InfillRequest, StopRules

    out = {}
    slots = args.pass_slots
    for prec, inf in infs.items():
        lay = inf.layout(pass_req)
        rows = [[[inf.ids.mask] * slots]]
        window = len(lay.sequence(rows[0])[0])

        def exact(inf=inf, lay=lay, rows=rows):
            inf.cache = "exact"
            with torch.inference_mode():
                pass_runner(inf, lay)(rows)
            sync()
            return {}

        out[f"pass/exact/{prec}"] = (exact, {"window_tokens": window})
        # the dual cache: a pass runner whose first call built the context, kept across rounds
        inf.cache = "dual"
        with torch.inference_mode():
            cached_run = pass_runner(inf, lay)
            cached_run(rows)
        sync()

        def dual(inf=inf, run=cached_run, rows=rows):
            inf.cache = "dual"
            with torch.inference_mode():
                run(rows)
            sync()
            return {}

        out[f"pass/dual/{prec}"] = (dual, {"window_tokens": window, "query_tokens": slots + 1})
        if prec == args.fill_precision:

            def context(inf=inf, lay=lay, rows=rows):
                inf.cache = "dual"
                with torch.inference_mode():
                    pass_runner(inf, lay)(rows)
                sync()
                return {}

            out[f"pass/dual-context/{prec}"] = (context, {"window_tokens": window})

    inf = infs[args.fill_precision]
    hole = Hole(24, single_line=True, stop=StopRules(single_line=True))
    modes = {
        "default": {},
        "tps1": {"tokens_per_step": 1},
        "fixed4": {"schedule": "fixed", "steps": 4},
    }
    for mode, kw in modes.items():
        for cache in ("exact", "dual"):
            req = InfillRequest([fill_pre, hole, fill_suf], language="python", **kw)

            def fill(inf=inf, req=req, cache=cache):
                inf.cache = cache
                res = inf.infill(req)
                sync()
                r = res[0]
                return {"passes": r.steps_used, "tokens": r.tokens, "ended_by": r.ended_by}

            name = f"fill/{cache}/{mode}/{args.fill_precision}"
            out[name] = (fill, {"request": kw or "default (threshold schedule)"})
    for t in args.extra_threads:  # the same variants at another torch thread count
        for name in (f"pass/exact/{args.fill_precision}", f"pass/dual/{args.fill_precision}"):
            out[f"{name}@{t}t"] = (with_threads(out[name][0], t, args.threads), out[name][1])
        for mode in ("default", "fixed4"):
            name = f"fill/dual/{mode}/{args.fill_precision}"
            out[f"{name}@{t}t"] = (with_threads(out[name][0], t, args.threads), out[name][1])
    return out


def with_threads(fn, threads: int, restore: int):
    import torch

    def run():
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(restore)

    return run


def table(results: dict, ratios: dict) -> str:
    rows = [
        "| variant | median ms | p90 ms | n | passes | notes |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        if not r.get("times_s"):
            continue
        s = stats(r["times_s"])
        passes = r.get("passes")
        notes = ", ".join(f"{k} {v}" for k, v in r.get("info", {}).items() if k != "request")
        rows.append(
            f"| {name} | {s['median_ms']:.0f} | {s['p90_ms']:.0f} | {s['n']} | "
            f"{'' if passes is None else passes} | {notes} |"
        )
    lines = "\n".join(rows)
    if ratios:
        lines += "\n\n" + "\n".join(f"- {k}: {v:.2f}x" for k, v in ratios.items())
    return lines


def compute_ratios(results: dict, fill_prec: str, precs: list[str]) -> dict:
    med = {k: statistics.median(v["times_s"]) for k, v in results.items() if v.get("times_s")}
    out = {}

    def ratio(label, a, b):
        if a in med and b in med and med[b] > 0:
            out[label] = med[a] / med[b]

    if "fp32" in precs and "int8" in precs:
        ratio("exact pass fp32 / int8", "pass/exact/fp32", "pass/exact/int8")
        ratio("dual pass fp32 / int8", "pass/dual/fp32", "pass/dual/int8")
    for p in precs:
        ratio(f"exact pass / dual pass ({p})", f"pass/exact/{p}", f"pass/dual/{p}")
    for mode in ("default", "tps1", "fixed4"):
        ratio(
            f"fill exact / dual ({mode}, {fill_prec})",
            f"fill/exact/{mode}/{fill_prec}",
            f"fill/dual/{mode}/{fill_prec}",
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/family_speed", help="where checkpoints are built once")
    ap.add_argument("--shape", default="open-dcoder-0.5b", choices=sorted(BUILDERS))
    ap.add_argument("--builder", choices=sorted(FAMILY), help="layout (default: the shape's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default=None, help="comma list (CPU: fp32,int8; CUDA: bf16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--extra-threads",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[1],
        help="also time some variants at these thread counts (comma list; '' for none)",
    )
    ap.add_argument("--repeats", type=int, default=7, help="rounds (each variant once a round)")
    ap.add_argument("--window", type=int, default=600, help="tokens in a pass's window")
    ap.add_argument("--pass-slots", type=int, default=16)
    ap.add_argument("--file", default=DEFAULT_FILE, help="the Python file whose line is filled")
    ap.add_argument("--line", type=int, default=DEFAULT_LINE)
    ap.add_argument("--no-fills", action="store_true", help="passes only")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--load-probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--family", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_probe:
        return load_probe(args)

    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    precs = (args.precision or ("bf16" if cuda else "fp32,int8")).split(",")
    args.fill_precision = "int8" if "int8" in precs else precs[-1]
    if cuda:
        args.extra_threads = []
    builder = args.builder or BUILDERS[args.shape]
    family = FAMILY[builder]
    path = checkpoint(Path(args.dir), args.shape, builder)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    record = {
        "bench": "family_speed",
        "command": " ".join([".venv/bin/python", "bench/family_speed.py", *sys.argv[1:]]),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip(),
        "checkpoint": {
            "path": str(path),
            "builder": builder,
            "shape": args.shape,
            "family": family,
        },
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "extra_threads": args.extra_threads,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "load_avg_start": load_avg(),
    }
    print(f"load average {record['load_avg_start']}; measuring load time and RSS ...", flush=True)
    record["load"] = {p: load_stats(args, path, family, p) for p in precs}
    print(json.dumps(record["load"]), flush=True)

    from model.families.infiller import FamilyInfiller
    from model.interface import Hole, InfillRequest

    infs = {}
    for p in precs:
        infs[p] = FamilyInfiller(path, args.device, p, family=family, cache="exact")
    record["rss_after_loading_all_mb"] = rss_mb()
    inf = infs[args.fill_precision]
    text = (ROOT / args.file).read_text()
    special = len(inf.layout(InfillRequest(["", Hole(1), ""])).sequence([[0]])[0]) - 1
    context = args.window - args.pass_slots - special
    pre, suf, line = context_around(inf, text, args.line, context, ratio=0.6)
    pass_req = InfillRequest([pre, Hole(args.pass_slots), suf])
    record["request"] = {
        "file": args.file,
        "line": args.line,
        "line_text": line,
        "prefix_tokens": inf.count_tokens(pre),
        "suffix_tokens": inf.count_tokens(suf),
        "prefix_chars": len(pre),
        "suffix_chars": len(suf),
        "fill_hole": "Hole(24, single_line=True, stop=StopRules(single_line=True)), language python",
        "pass_slots": args.pass_slots,
    }
    print(json.dumps(record["request"]), flush=True)
    runs = variants(args, infs, pass_req, pre, suf, sync)
    if args.no_fills:
        runs = {k: v for k, v in runs.items() if not k.startswith("fill/")}
    names = list(runs)
    results = {n: {"info": runs[n][1], "times_s": []} for n in names}
    print("warm-up ...", flush=True)
    for n in names:  # one untimed run each (first-call allocations, kernel selection)
        if n.startswith("pass/"):
            runs[n][0]()
    record["rounds"] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        start = load_avg()
        t_round = time.perf_counter()
        for n in order:
            t0 = time.perf_counter()
            got = runs[n][0]()
            dt = time.perf_counter() - t0
            results[n]["times_s"].append(dt)
            for k, v in got.items():
                results[n].setdefault(k + "_all", []).append(v)
                results[n][k] = v
        record["rounds"].append(
            {
                "load_avg_start": start,
                "load_avg_end": load_avg(),
                "s": time.perf_counter() - t_round,
            }
        )
        record["results"] = {
            n: {**v, **stats(v["times_s"])} for n, v in results.items() if v["times_s"]
        }
        record["ratios_of_medians"] = compute_ratios(results, args.fill_precision, precs)
        record["load_avg_end"] = load_avg()
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(
            f"round {r + 1}/{args.repeats}: {time.perf_counter() - t_round:.0f} s, "
            f"load {start} -> {load_avg()}",
            flush=True,
        )
    print()
    print(table(results, record["ratios_of_medians"]))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
