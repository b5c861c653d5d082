"""The length signal of line fills (model/length.py): fit its head, measure it, choose how to
decode with it, all on code the model never saw (bench/length_tasks.py), never on HumanEval.

    python bench/length_signal.py fit    --n 3000             # calib split -> model/weights
    python bench/length_signal.py report --n 1500             # dev split: estimate accuracy
    python bench/length_signal.py decode --n 400 --quantiles 0.2,0.3,0.5   # dev split: fills
    python bench/length_signal.py ends   --n 300              # calib split: where ends go wrong

`fit` runs the shipped network once per line (the first denoising step of a 24-slot line hole,
all slots masked), fits `LengthHead` to the end-probability curves against the true lengths, and
writes it into the checkpoint as its own safetensors shard (config.json: length_head_hidden).
`report` gives exact / within 1 / within 2 by length bucket for the model's own end signal (the
first slot where P(end) beats every other token) and the head's quantiles. `decode` fills the
dev lines with the PAD budget alone, with the head's estimate at several quantiles, and with the
true length (as a minimum, and exact) as the ceiling: exact match, edit similarity, passes,
tokens per pass, time. `ends` decodes lines with the PAD budget (as the server does at a line
start) and checks every end it commits against the truth, by its P(end) when committed and the
step: whether the model's end probabilities are calibrated, and which commits cut fills short.
Results: bench/results/length_signal_{report,decode,ends}.json.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import infill_runner as R
import numpy as np
import torch
from length_tasks import line_tasks

from model import cpu_threads
from model.infill import denoise_config, load_infiller
from model.interface import Hole
from model.length import LengthHead, end_curve, features, quantile_length
from model.sampler import Cancelled, Hooks, denoise
from training.length_train import ordinal_targets, standardise

SLOTS = 24  # the server's line budget (lineBudget)
BUCKETS = ((0, 4), (5, 8), (9, 16), (17, 24))
SEEDS = {"calib": 1, "dev": 2}


def own_signal_length(end: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """The baseline: the first slot where P(end) beats every other token (S if none)."""
    n = end.shape[-1]
    idx = torch.arange(n, device=end.device)
    return torch.where(end > top, idx, torch.full_like(idx, n)).amin(-1)


def step_curves(m, tasks, step: int = 1) -> dict[str, np.ndarray]:
    """For each (prefix, line, suffix): the end and top-content curves of a 24-slot line hole
    at denoising step `step` as the infiller decodes it (before that step no PAD is committed,
    model/sampler.py's length_step), the true length in tokens and whether the cursor is
    mid-line."""
    ends, tops, lengths, mid = [], [], [], []
    for pre, body, suf in tasks:
        seen = curves_at(m, [pre, Hole(SLOTS, single_line=True), suf], step)
        if not seen:  # filled before that step: every slot committed as content
            continue
        ends.append(seen[0][0][0].numpy())
        tops.append(seen[0][1][0].numpy())
        lengths.append(len(m.tok.encode(body)))
        mid.append(bool(pre.split("\n")[-1].strip()))
    return {
        "end": np.array(ends),
        "top": np.array(tops),
        "length": np.array(lengths),
        "mid": np.array(mid),
    }


def curves_at(m, segments: list, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (end, top) curves `min_length` is given at `step` for this request ([] when the
    fill is complete before that step)."""
    p = R.prepare(m, segments)
    cache, _ = R.encode(m, p)
    # the infiller's settings for a line hole, at the PAD budget's threshold (the one the
    # length signal decodes with applies from `step` on, after these curves)
    cfg = denoise_config("threshold", None, None, 0.0, SLOTS, length_step=step)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def capture(logits: torch.Tensor) -> torch.Tensor:
        seen.append(end_curve(logits, m.tok.pad_id))
        return torch.zeros(logits.shape[0], 1, dtype=torch.long)

    try:
        with torch.inference_mode():
            denoise(
                m.span_step(cache, p.layout.span_pos, p.layout.span.holes, cfg),
                p.layout.span,
                m.vocab,
                cfg,
                hooks=Hooks(should_stop=lambda: bool(seen), min_length=capture),
                device=m.device,
            )
    except Cancelled:
        pass
    return seen


def fit_head(curves: dict[str, np.ndarray], hidden: int = 16, iters: int = 800) -> LengthHead:
    """Fit the ordinal head by full-batch Adam on binary cross-entropy per slot."""
    torch.manual_seed(0)
    end, top = torch.tensor(curves["end"]), torch.tensor(curves["top"])
    y = ordinal_targets(torch.tensor(curves["length"]).clamp(max=SLOTS), SLOTS)
    head = LengthHead(hidden)
    f = features(end, top)
    standardise(head, f)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    for _ in range(iters):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(f), y)
        (loss + 1e-4 * (head.w_in**2).sum()).backward()
        opt.step()
    return head.eval()


def save_head(head: LengthHead, weights: Path, step: int = 1) -> None:
    """Write the head as its own shard of the checkpoint at `weights` and register it."""
    from safetensors.torch import save_file

    shard = "length_head.safetensors"
    tensors = {f"length_head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(weights / shard), metadata={"format": "pt"})
    index_f = weights / "model.safetensors.index.json"
    index = json.loads(index_f.read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard}
    index["weight_map"].update({k: shard for k in tensors})
    index_f.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    cfg_f = weights / "config.json"
    cfg = json.loads(cfg_f.read_text())
    cfg["length_head_hidden"] = int(head.w_in.shape[0])
    cfg["length_head_step"] = step
    cfg_f.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def accuracy(est: np.ndarray, true: np.ndarray) -> dict:
    """Exact / within 1 / within 2, under and over, overall and per length bucket."""
    d = np.abs(est - true)

    def rates(sel) -> dict:
        n = int(sel.sum())
        if not n:
            return {"n": 0}
        return {
            "n": n,
            "exact": round(float((d[sel] == 0).mean()), 3),
            "within1": round(float((d[sel] <= 1).mean()), 3),
            "within2": round(float((d[sel] <= 2).mean()), 3),
            "under": round(float((est[sel] < true[sel]).mean()), 3),
            "over": round(float((est[sel] > true[sel]).mean()), 3),
        }

    out = {"all": rates(np.ones_like(d, dtype=bool))}
    for lo, hi in BUCKETS:
        out[f"{lo}-{hi}"] = rates((true >= lo) & (true <= hi))
    return out


def estimates(head: LengthHead, curves: dict, quantiles: list[float]) -> dict[str, np.ndarray]:
    end, top = torch.tensor(curves["end"]), torch.tensor(curves["top"])
    out = {"own signal": own_signal_length(end, top).numpy()}
    with torch.no_grad():
        cdf = head.cdf(end, top)
    for q in quantiles:
        out[f"head q{q}"] = quantile_length(cdf, q).numpy()
    return out


def cmd_fit(a, m) -> None:
    curves = step_curves(m, line_tasks(a.n, "calib", SEEDS["calib"]), a.length_step)
    head = fit_head(curves)
    save_head(head, Path(a.weights or m.path), a.length_step)
    print(f"fitted on {len(curves['length'])} calib lines; saved to {a.weights or m.path}")


def cmd_report(a, m) -> None:
    if not m.has_length_signal:
        raise SystemExit("this checkpoint has no length head: run `fit` first")
    curves = step_curves(m, line_tasks(a.n, "dev", SEEDS["dev"]), a.length_step)
    true = np.minimum(curves["length"], SLOTS)
    rows = {}
    for name, est in estimates(m.net.length_head, curves, a.quantiles).items():
        rows[name] = {
            "all": accuracy(est, true),
            "line start": accuracy(est[~curves["mid"]], true[~curves["mid"]]),
            "mid-line": accuracy(est[curves["mid"]], true[curves["mid"]]),
        }
        r = rows[name]["all"]
        print(
            f"{name:12s} "
            + "  ".join(
                f"{k}: {v.get('exact')}/{v.get('within1')}/{v.get('within2')} (n {v['n']})"
                for k, v in r.items()
            )
        )
    write(a, "report", {"n": len(true), "slots": SLOTS, "estimators": rows})


def cmd_decode(a, m) -> None:
    tasks = line_tasks(a.n, "dev", a.seed if a.seed is not None else SEEDS["dev"])
    configs = a.configs.split(",")
    stats = {
        c: {"em": 0, "sim": [], "steps": [], "tokens": [], "ratio": [], "ms": []} for c in configs
    }
    per_task = []
    for k, (pre, body, suf) in enumerate(tasks):
        true = len(m.tok.encode(body))
        caches: dict[int, tuple] = {}  # one context encoding per hole budget
        for c in configs:
            lo, hi, length = 0, SLOTS, False
            rule = "soft" if "soft" in c else "hard"
            options = replace(m.options, length_rule=rule, length_step=a.length_step)
            thr = option(c, "t")
            cfg = R.denoise_config("threshold", steps=a.steps, threshold=thr)
            if c.startswith("head"):  # head [soft] qX [pY] [tZ]
                q, p_end = option(c, "q"), option(c, "p")
                options = replace(options, length_quantile=q, length_end_prob=p_end)
                length = True
            elif c == "true min":
                lo = min(true, SLOTS)
            elif c == "true exact":
                lo = hi = max(1, min(true, SLOTS))
            p = R.prepare(m, [pre, Hole(hi, min_tokens=lo, single_line=True), suf])
            if hi not in caches:
                caches[hi] = R.encode(m, p)[0]
            cache = caches[hi]
            f = R.fill_cached(m, p, cache, cfg, length=length, options=options)
            fill = f.fills[0].split("\n")[0]
            s = stats[c]
            s["em"] += fill.strip() == body.strip()
            s["sim"].append(difflib.SequenceMatcher(None, fill.strip(), body.strip()).ratio())
            s["steps"].append(f.steps)
            s["tokens"].append(f.tokens)
            s["ratio"].append(f.tokens / max(1, true))
            s["ms"].append(f.ms)
            per_task.append(
                {
                    "task": k,
                    "config": c,
                    "exact": fill.strip() == body.strip(),
                    "tokens": f.tokens,
                    "true": true,
                    "steps": f.steps,
                }
            )
        if (k + 1) % 50 == 0:
            print(f"{k + 1}/{len(tasks)} lines", flush=True)
    rows = {}
    for c, s in stats.items():
        rows[c] = {
            "exact_match": round(100 * s["em"] / len(tasks), 1),
            "edit_similarity": round(statistics.mean(s["sim"]), 3),
            "tokens_over_true": round(statistics.median(s["ratio"]), 2),
            "mean_passes": round(statistics.mean(s["steps"]), 2),
            "tokens_per_pass": round(sum(s["tokens"]) / max(1, sum(s["steps"])), 2),
            "median_denoise_ms": round(statistics.median(s["ms"]), 1),
            "p95_denoise_ms": round(float(np.percentile(s["ms"], 95)), 1),
        }
        print(c, rows[c], flush=True)
    write(
        a,
        "decode",
        {"n": len(tasks), "steps_bound": a.steps, "results": rows, "per_task": per_task},
    )


def cmd_ends(a, m) -> None:
    """Each end (PAD or line break) the PAD-budget decoding commits: its P(end) in the step that
    committed it, that step, and whether it is right (at or past the true length)."""
    tasks = line_tasks(a.n, "calib", a.seed if a.seed is not None else SEEDS["calib"])
    pad, newlines = m.tok.pad_id, set(m.tok.newline_ids)
    nl = torch.tensor(sorted(newlines))
    commits, lines, curve = [], [], []
    for pre, body, suf in tasks:
        true = len(m.tok.encode(body))
        p = R.prepare(m, [pre, Hole(SLOTS, single_line=True), suf])
        cache, _ = R.encode(m, p)
        cfg = denoise_config("threshold", None, a.threshold, 0.0, SLOTS)
        step = m.span_step(cache, p.layout.span_pos, p.layout.span.holes, cfg)
        seen: dict[str, torch.Tensor] = {}

        def step_fn(x, step=step, seen=seen):
            logits = step(x)
            folded = logits.float().clone()  # as the sampler reads them: banned ids never drawn
            folded[..., list(m.vocab.banned_ids)] = -math.inf
            probs = torch.softmax(folded, -1)[0]
            seen["p_end"], seen["x"] = probs[:, pad] + probs[:, nl].sum(-1), x[0].clone()
            if "first" not in seen:  # the first step, every slot: the model's whole end curve
                seen["first"] = seen["p_end"]
            return logits

        first_wrong: list[int] = []

        def on_step(k, x, seen=seen, true=true, first_wrong=first_wrong):
            was, now = seen["x"], x[0]
            for slot in range(SLOTS):
                tok = int(now[slot])
                if int(was[slot]) == m.tok.mask_id and (tok == pad or tok in newlines):
                    right = slot >= true
                    commits.append((k, float(seen["p_end"][slot]), right))
                    if not right and not first_wrong:
                        first_wrong.append(k)

        with torch.inference_mode():
            denoise(step_fn, p.layout.span, m.vocab, cfg, hooks=Hooks(on_step=on_step))
        lines.append((bool(pre.split("\n")[-1].strip()), first_wrong[0] if first_wrong else 0))
        curve += [(float(pe), slot >= true) for slot, pe in enumerate(seen["first"])]
    thr = cfg.threshold
    table = []
    for lo, hi in ((0.0, 0.5), (0.5, thr), (thr, 0.95), (0.95, 0.99), (0.99, 1.01)):
        for name, first in (("step 1", True), ("later steps", False)):
            sel = [r for k, pe, r in commits if lo <= pe < hi and (k == 1) == first]
            pes = [pe for k, pe, _ in commits if lo <= pe < hi and (k == 1) == first]
            if sel:
                row = {"p_end": f"[{lo}, {min(hi, 1.0)}{']' if hi > 1 else ')'}", "when": name}
                row |= {"ends": len(sel), "mean_p_end": round(statistics.mean(pes), 3)}
                row["right"] = round(sum(sel) / len(sel), 3)
                table.append(row)
                print(row, flush=True)
    calibration = []  # the first step's curve, every slot: P(end) against "past the true end"
    for lo, hi in ((0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)):
        sel = [(pe, r) for pe, r in curve if lo <= pe < hi]
        if sel:
            calibration.append(
                {
                    "p_end": f"[{lo}, {min(hi, 1.0)}{']' if hi > 1 else ')'}",
                    "slots": len(sel),
                    "mean_p_end": round(statistics.mean(pe for pe, _ in sel), 3),
                    "past_true_end": round(statistics.mean(r for _, r in sel), 3),
                }
            )
            print(calibration[-1], flush=True)
    summary = {}
    for kind, mid in (("line start", False), ("mid-line", True)):
        ws = [w for md, w in lines if md == mid]
        summary[kind] = {
            "lines": len(ws),
            "an end before the true length": sum(1 for w in ws if w),
            "of them at step 1": sum(1 for w in ws if w == 1),
        }
    print(summary)
    body = {"n": len(tasks), "threshold": thr, "ends": table, "first_step_curve": calibration}
    write(a, "ends", body | {"lines": summary})


def option(config: str, letter: str) -> float | None:
    """The number after `letter` in a decode config's words ("head soft q0.3 p0.7": q -> 0.3)."""
    for w in config.split():
        if w[0] == letter and w[1:].replace(".", "", 1).isdigit():
            return float(w[1:])
    return None


def write(a, kind: str, body: dict) -> None:
    out = Path(a.out or R.ROOT / f"bench/results/length_signal_{kind}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    info = R.run_info(load_infiller(a.weights), a.threads)
    out.write_text(json.dumps({**info, **body}, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=("fit", "report", "decode", "ends"))
    ap.add_argument("--n", type=int, default=400, help="lines")
    ap.add_argument("--quantiles", default="0.2,0.3,0.4,0.5", help="report: head quantiles")
    ap.add_argument(
        "--configs",
        default="pad budget,head q0.3,head soft q0.3,true min,true exact",
        help="decode: comma-separated; 'pad budget', 'head [soft] qX [pY] [tZ]' (quantile X,"
        " ending before it from P(end) Y, threshold Z), 'true min', 'true exact'",
    )
    ap.add_argument("--seed", type=int, default=None, help="decode: task sample (default: dev's)")
    ap.add_argument("--steps", type=int, default=None, help="decode: a bound on passes")
    ap.add_argument("--threshold", type=float, default=0.9, help="ends: the line threshold")
    ap.add_argument(
        "--length-step", type=int, default=1, help="the step whose curves the head reads"
    )
    ap.add_argument("--weights", default=None, help="checkpoint directory (default: shipped)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    a.quantiles = [float(q) for q in a.quantiles.split(",") if q]
    m = load_infiller(a.weights)
    cpu_threads.apply(m, a.threads)
    commands = {"fit": cmd_fit, "report": cmd_report, "decode": cmd_decode, "ends": cmd_ends}
    commands[a.command](a, m)


if __name__ == "__main__":
    sys.exit(main())
