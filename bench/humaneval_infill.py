"""HumanEval infilling: execution-based pass@1 of the shipped model, per schedule and length mode.

Tasks are read at run time from --tasks (default ../shared/benchmarks/humaneval-infilling next to
the repo: HumanEval-SingleLineInfilling.jsonl.gz, HumanEval-MultiLineInfilling.jsonl.gz) and never
copied into the repo. Fill = prompt + Hole + suffix; the candidate program is
prompt + fill + suffix + test + check(entry_point), run with `python -I` in a temporary directory
under a timeout and resource limits, a few at a time in a small pool of worker threads.

A config is SUITE/LENGTH/SCHEDULE[@N]:
  SUITE     single | multi
  LENGTH    oracle (a Hole of exactly the canonical solution's token count: min = max, capped at 256)
            | bN   (the fixed editor budget of N tokens, e.g. b32 single-line, b128 multi-line)
            | bNl  (the same, flagged single-line as the server's line hole: a line break ends
              the fill as PAD does, Hole.single_line)
            | bNl+len (the same, with the length signal where the server uses it: a line with
              text before the hole, model/length.py; HumanEval's holes start their line, so
              this is bNl there) | bNl+lenall (the signal at line starts too)
  SCHEDULE  ltr (one token per step, left to right) | thrX (confidence threshold X, e.g. thr0.9)
            | thrXf (the same, PAD committed only at the fill's frontier: pad_at_frontier)
            | thrXsK (threshold X within at most K steps: each step commits at least an even
              share of what is left; e.g. thr0.9s4)
            | fixedK (K steps committing the most confident positions)
  @N        run it on N tasks of the suite: every k-th task from the first, k = ceil(total / N);
            @all (or no suffix) is every task. --subset N caps every config at N tasks.
With the oracle length, fixedK for K >= the fill's token count is one token per step (in
confidence order, not left to right). The context is encoded once per task and length and shared
by that task's schedules (exact: the cache depends only on the layout); ms/task is that context
time plus the config's own denoising time. Reported per config: pass@1, exact match
(fill.strip() == solution.strip(), and with every run of whitespace collapsed), mean forward
passes, tokens per forward pass, ms per task, and the empty-fill and canonical-solution pass rates
on the same tasks. The default run took 11 minutes on the shared 2-core CPU machine (load about 5):

    .venv/bin/python bench/humaneval_infill.py                      # defaults (DEFAULT_CONFIGS)
    .venv/bin/python bench/humaneval_infill.py --subset 20          # quick look
    .venv/bin/python bench/humaneval_infill.py --configs single/oracle/ltr,single/b32/thr0.9@all
Results: bench/results/humaneval_infill.json and .png next to it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import infill_runner as R

from model import cpu_threads
from model.interface import Hole, InfillRequest

ROOT = R.ROOT
SUITE_FILES = {
    "single": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi": "HumanEval-MultiLineInfilling.jsonl.gz",
}
MAX_HOLE = 256  # the infiller's limit on hole budgets
THRESHOLD_RE = re.compile(r"thr(0?\.\d+)(f?)(?:s(\d+))?")  # thrX, thrXf, thrXsK, thrXfsK
DEFAULT_CONFIGS = (
    # single-line: the two headline schedules on every 5th task (207), the rest on every 15th (69)
    "single/oracle/ltr@207,single/oracle/thr0.9@207,"
    "single/oracle/thr0.7@69,single/oracle/fixed1@69,single/oracle/fixed2@69,"
    "single/oracle/fixed4@69,single/oracle/fixed8@69,"
    "single/b32/ltr@69,single/b32/thr0.9@69,single/b32/thr0.7@69,"
    "single/b32/fixed1@69,single/b32/fixed2@69,single/b32/fixed4@69,single/b32/fixed8@69,"
    # multi-line: every 485th of the 5815 tasks (12). ltr at the 128-token budget runs to the
    # budget (128 forward passes, over a minute a task on the shared CPU): ask for it by name.
    "multi/oracle/ltr@12,multi/oracle/thr0.9@12,multi/oracle/thr0.7@12,"
    "multi/oracle/fixed2@12,multi/oracle/fixed8@12,"
    "multi/b128/thr0.9@12,multi/b128/fixed2@12,multi/b128/fixed8@12"
)


@dataclass(frozen=True)
class Config:
    suite: str
    length: str  # "oracle", "bN" or "bNl"
    schedule: str  # "ltr" | "thrX" | "fixedK"
    n: int | None  # tasks asked for (None: all)

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.length}/{self.schedule}"

    def denoise_config(self):
        if self.schedule == "ltr":
            return R.denoise_config("ltr")
        if self.schedule.startswith("thr"):
            m = THRESHOLD_RE.fullmatch(self.schedule)
            return R.denoise_config(
                "threshold",
                threshold=float(m.group(1)),
                steps=int(m.group(3)) if m.group(3) else None,
                pad_at_frontier=bool(m.group(2)) or None,  # None: the infiller's rule for the hole
            )
        return R.denoise_config("fixed", steps=int(self.schedule[5:]))


def parse_configs(text: str, cap: int | None) -> list[Config]:
    out = []
    for spec in filter(None, (s.strip() for s in text.split(","))):
        body, _, count = spec.partition("@")
        m = re.fullmatch(
            r"(single|multi)/(oracle|b\d+l?(?:\+len(?:all)?)?)/(ltr|thr\S*|fixed\d+)", body
        )
        if not m or (m.group(3).startswith("thr") and not THRESHOLD_RE.fullmatch(m.group(3))):
            raise SystemExit(f"bad config {spec!r}: expected SUITE/LENGTH/SCHEDULE[@N]")
        n = None if count in ("", "all") else int(count)
        if cap is not None:
            n = cap if n is None else min(n, cap)
        if m.group(2) != "oracle" and budget_of(m.group(2)) > MAX_HOLE:
            raise SystemExit(f"{spec}: budget above {MAX_HOLE} tokens")
        out.append(Config(m.group(1), m.group(2), m.group(3), n))
    return out


def budget_of(length: str) -> int:
    """The token budget of a LENGTH spec bN, bNl or bNl+len."""
    return int(length[1:].split("+")[0].rstrip("l"))


def subset(total: int, n: int | None) -> list[int]:
    """Every k-th task index from 0, k = ceil(total / n): deterministic and spread evenly."""
    if n is None or n >= total:
        return list(range(total))
    return list(range(0, total, math.ceil(total / n)))


def load_tasks(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------- sandboxed execution
def _limits(timeout: float):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (int(timeout) + 1, int(timeout) + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()

    return apply


def program(task: dict, fill: str) -> str:
    return (
        task["prompt"]
        + fill
        + task["suffix"]
        + "\n"
        + task["test"]
        + f"\ncheck({task['entry_point']})\n"
    )


def execute(src: str, timeout: float) -> str:
    """'passed', 'timeout', or the name of the exception that ended the program."""
    with tempfile.TemporaryDirectory(prefix="he_") as d:
        Path(d, "prog.py").write_text(src, encoding="utf-8")
        try:
            p = subprocess.run(
                [sys.executable, "-I", "prog.py"],
                check=False,
                cwd=d,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
                preexec_fn=_limits(timeout),
                env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
            )
        except subprocess.TimeoutExpired:
            return "timeout"
    if p.returncode == 0:
        return "passed"
    lines = p.stderr.decode("utf-8", "replace").strip().splitlines()
    m = re.match(r"([A-Za-z_][\w.]*)(:|$)", lines[-1]) if lines else None
    return m.group(1) if m else f"exit{p.returncode}"


class Executor:
    """Runs candidate programs in a small pool; identical (task, fill) pairs run once."""

    def __init__(self, workers: int, timeout: float):
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.timeout = timeout
        self.seen: dict[tuple[str, str], Future] = {}

    def submit(self, task: dict, fill: str) -> Future:
        key = (task["task_id"], fill)
        if key not in self.seen:
            self.seen[key] = self.pool.submit(execute, program(task, fill), self.timeout)
        return self.seen[key]


# ---------------------------------------------------------------------- measurement
def first_line(fill: str) -> str:
    """The fill cut after its first newline: what a single-line editor completion keeps."""
    k = fill.find("\n")
    return fill if k < 0 else fill[: k + 1]


def ws(s: str) -> str:
    return " ".join(s.split())


def oracle_budget(m, task: dict) -> int:
    return max(1, min(MAX_HOLE, m.count_tokens(task["canonical_solution"])))


def run_group(m, tasks, configs, length, ex: Executor, log) -> dict[str, list[dict]]:
    """All configs of one suite and length: one context encoding per task, shared."""
    wanted = {c.name: set(subset(len(tasks), c.n)) for c in configs}
    order = sorted(set().union(*wanted.values()))
    rows: dict[str, list[dict]] = {c.name: [] for c in configs}
    t_start = time.perf_counter()
    for done, i in enumerate(order, 1):
        t = tasks[i]
        oracle_n = m.count_tokens(t["canonical_solution"])
        budget = oracle_budget(m, t) if length == "oracle" else budget_of(length)
        # oracle: exactly the solution's length (PAD cannot end it early); bN: up to N tokens;
        # bNl: up to N tokens of one line, whose line break is the suffix's (as in an editor: the
        # solutions end with theirs), so a line break ends the fill and is added back to run it
        line = length.split("+")[0].endswith("l")
        hole = Hole(
            max_tokens=budget, min_tokens=budget if length == "oracle" else 0, single_line=line
        )
        p = R.prepare(m, [t["prompt"], hole, "\n" + t["suffix"] if line else t["suffix"]])
        cache, ctx_ms = R.encode(m, p)
        for c in configs:
            if i not in wanted[c.name]:
                continue
            sig = {"len": True, "lenall": "all"}.get(length.partition("+")[2], False)
            f = R.fill_cached(m, p, cache, c.denoise_config(), length=sig)
            fill = f.fills[0] + ("\n" if line else "")
            canon = t["canonical_solution"]
            rows[c.name].append(
                {
                    "task_id": t["task_id"],
                    "fill": fill,
                    "steps": f.steps,
                    "tokens": f.tokens,
                    "oracle_tokens": oracle_n,
                    "budget": budget,
                    "ms": ctx_ms + f.ms,
                    "exact": fill.strip() == canon.strip(),
                    "exact_ws": ws(fill) == ws(canon),
                    "_status": ex.submit(t, fill),
                    "_status1": ex.submit(t, first_line(fill)) if c.suite == "single" else None,
                }
            )
        if done % 25 == 0 or done == len(order):
            el = time.perf_counter() - t_start
            log(f"  {configs[0].suite}/{length}: {done}/{len(order)} tasks, {el:.0f} s")
    return rows


def summarize(cfg: Config, rows: list[dict], base: dict[str, dict[str, str]]) -> dict:
    n = len(rows)
    status = [r["_status"].result() for r in rows]
    steps = sum(r["steps"] for r in rows)
    toks = sum(r["tokens"] for r in rows)
    ids = [r["task_id"] for r in rows]
    fails = Counter(s for s in status if s != "passed")
    first = None
    if rows and rows[0]["_status1"] is not None:
        first = sum(r["_status1"].result() == "passed" for r in rows) / n
    return {
        "config": cfg.name,
        "suite": cfg.suite,
        "length": cfg.length,
        "schedule": cfg.schedule,
        "tasks": n,
        "pass_at_1": sum(s == "passed" for s in status) / n,
        "pass_at_1_first_line": first,
        "empty_fill_pass": sum(base["empty"][t] == "passed" for t in ids) / n,
        "canonical_pass": sum(base["canonical"][t] == "passed" for t in ids) / n,
        "exact_match": sum(r["exact"] for r in rows) / n,
        "exact_match_ws": sum(r["exact_ws"] for r in rows) / n,
        "mean_forward_passes": steps / n,
        "tokens_per_forward_pass": toks / max(1, steps),
        "mean_tokens": toks / n,
        "mean_oracle_tokens": sum(r["oracle_tokens"] for r in rows) / n,
        "mean_budget": sum(r["budget"] for r in rows) / n,
        "mean_ms_per_task": sum(r["ms"] for r in rows) / n,
        "syntax_errors": fails.get("SyntaxError", 0) + fails.get("IndentationError", 0),
        "failures": dict(fails.most_common()),
    }


def check_runner(m, tasks: list[dict]) -> bool:
    """The bench's shared-cache path gives the same fills as `infiller.infill` (encoding every
    context in full: successive tasks share most of their context, which infill would reuse)."""
    ok = True
    m.reuse_context = False
    for t in tasks[:2]:
        segs = [t["prompt"], Hole(max_tokens=32), t["suffix"]]
        p = R.prepare(m, segs)
        cache, _ = R.encode(m, p)
        for sched, kw in (("ltr", {}), ("threshold", {"threshold": 0.9}), ("fixed", {"steps": 4})):
            a = R.fill_cached(m, p, cache, R.denoise_config(sched, kw.get("steps"), 0.9)).fills
            r = m.infill(InfillRequest(segments=segs, schedule=sched, seed=0, **kw))[0]
            ok &= a == r.fills
    m.reuse_context = True
    return ok


def markdown(results: list[dict], baselines: dict) -> str:
    lines = []
    for suite, b in baselines.items():
        lines.append(
            f"{suite}: {b['tasks']} tasks evaluated; empty fill passes {b['empty_pass']:.1%}, "
            f"canonical solution passes {b['canonical_pass']:.1%}"
        )
    lines += [
        "",
        (
            "| config | tasks | pass@1 | pass@1 first line | empty floor | exact | exact (ws) "
            "| fwd passes | tok/pass | tokens / oracle | ms/task | syntax err |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        fl = r.get("pass_at_1_first_line")
        first = "-" if fl is None else f"{fl:.1%}"
        lines.append(
            f"| {r['config']} | {r['tasks']} | {r['pass_at_1']:.1%} | {first} "
            f"| {r['empty_fill_pass']:.1%} "
            f"| {r['exact_match']:.1%} | {r['exact_match_ws']:.1%} "
            f"| {r['mean_forward_passes']:.1f} | {r['tokens_per_forward_pass']:.2f} "
            f"| {r['mean_tokens']:.1f} / {r['mean_oracle_tokens']:.1f} "
            f"| {r['mean_ms_per_task']:.0f} | {r['syntax_errors']} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], baselines: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = [s for s in ("single", "multi") if any(r["suite"] == s for r in results)]
    fig, axes = plt.subplots(1, len(suites), figsize=(6.5 * len(suites), 4.8), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        for length, marker in (("oracle", "o"), (None, "s")):
            rs = [
                r
                for r in results
                if r["suite"] == suite and ((r["length"] == "oracle") == (length == "oracle"))
            ]
            if not rs:
                continue
            label = "oracle length" if length else f"budget {rs[0]['length'][1:]} tokens"
            ax.scatter(
                [r["mean_forward_passes"] for r in rs],
                [100 * r["pass_at_1"] for r in rs],
                marker=marker,
                label=label,
            )
            for r in rs:
                ax.annotate(
                    r["schedule"],
                    (r["mean_forward_passes"], 100 * r["pass_at_1"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        b = baselines[suite]
        ax.axhline(100 * b["empty_pass"], ls="--", c="gray", label="empty-fill floor")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("mean forward passes per fill (log)")
        ax.set_ylabel("pass@1 (%)")
        ax.set_title(f"HumanEval {suite}-line infilling, shipped model")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--tasks",
        default=str(ROOT.parent / "shared/benchmarks/humaneval-infilling"),
        help="folder of the HumanEval infilling task files (default: %(default)s)",
    )
    ap.add_argument(
        "--configs", default=DEFAULT_CONFIGS, help="comma-separated SUITE/LENGTH/SCHEDULE[@N]"
    )
    ap.add_argument("--subset", type=int, default=None, help="cap every config at N tasks")
    ap.add_argument("--out", default=str(ROOT / "bench/results/humaneval_infill.json"))
    ap.add_argument("--weights", default=None, help="checkpoint directory (default: shipped)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads; 0: automatic, as the server"
    )
    ap.add_argument("--workers", type=int, default=2, help="programs run at once")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per program")
    args = ap.parse_args()
    configs = parse_configs(args.configs, args.subset)
    missing = [
        str(Path(args.tasks) / f)
        for s, f in SUITE_FILES.items()
        if any(c.suite == s for c in configs) and not (Path(args.tasks) / f).is_file()
    ]
    if missing:
        sys.exit(
            f"HumanEval infilling task files not found: {', '.join(missing)}.\n"
            "They are not part of this repository. Get them from the human-eval-infilling project "
            "(MIT licence: https://github.com/openai/human-eval-infilling, folder data/: "
            f"{', '.join(SUITE_FILES.values())}) and pass their folder with --tasks DIR."
        )

    from model.infill import load_infiller

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    m = load_infiller(args.weights)
    cpu_threads.apply(m, args.threads)  # 0: automatic, as the server
    ex = Executor(args.workers, args.timeout)
    all_tasks = {
        s: load_tasks(Path(args.tasks) / f)
        for s, f in SUITE_FILES.items()
        if any(c.suite == s for c in configs)
    }
    runner_ok = check_runner(m, all_tasks.get("single") or all_tasks["multi"])
    log(f"shared-cache runner matches infiller.infill: {runner_ok}")

    results, baselines = [], {}
    loads: list[float] = []

    def save() -> dict:
        """Write the JSON so far (after each suite, so a cut-short run keeps what it measured)."""
        loads.append(os.getloadavg()[0])
        report = {
            **R.run_info(m, args.threads),
            "load_average_1min_samples": loads,
            "wall_s": time.perf_counter() - t0,
            "runner_matches_infill": runner_ok,
            "budgets": "oracle = canonical token count (capped at 256); bN = N tokens; bNl = N tokens"
            " of one line (single-line hole)",
            "baselines": baselines,
            "results": results,
        }
        out.write_text(json.dumps(report, indent=1))
        return report

    for suite, tasks in all_tasks.items():
        cs = [c for c in configs if c.suite == suite]
        used = sorted(set().union(*(subset(len(tasks), c.n) for c in cs)))
        base_f = {
            kind: {tasks[i]["task_id"]: ex.submit(tasks[i], fill(tasks[i])) for i in used}
            for kind, fill in (
                ("empty", lambda t: ""),
                ("canonical", lambda t: t["canonical_solution"]),
            )
        }
        rows: dict[str, list[dict]] = {}
        for length in dict.fromkeys(c.length for c in cs):
            group = [c for c in cs if c.length == length]
            log(f"{suite}/{length}: {len(group)} configs")
            rows.update(run_group(m, tasks, group, length, ex, log))
        base = {k: {t: f.result() for t, f in v.items()} for k, v in base_f.items()}
        baselines[suite] = {
            "tasks": len(used),
            "total_tasks": len(tasks),
            "empty_pass": sum(s == "passed" for s in base["empty"].values()) / len(used),
            "canonical_pass": sum(s == "passed" for s in base["canonical"].values()) / len(used),
            "canonical_failures": sorted(t for t, s in base["canonical"].items() if s != "passed"),
        }
        for c in cs:
            r = summarize(c, rows[c.name], base)
            r["subset"] = (
                f"all {len(tasks)}"
                if c.n is None or c.n >= len(tasks)
                else f"every {math.ceil(len(tasks) / c.n)}th task from index 0"
            )
            results.append(r)
            log(
                f"{c.name}: pass@1 {r['pass_at_1']:.1%} exact {r['exact_match']:.1%} "
                f"({r['tasks']} tasks, empty floor {r['empty_fill_pass']:.1%})"
            )
        for rs in rows.values():  # keep the fills for inspection, statuses resolved
            for r in rs:
                r["status"] = r.pop("_status").result()
                s1 = r.pop("_status1")
                r["status_first_line"] = None if s1 is None else s1.result()
        (out.parent / (out.stem + f"_{suite}_fills.jsonl")).write_text(
            "".join(json.dumps({"config": n, **r}) + "\n" for n, rs in rows.items() for r in rs)
        )
        save()
    ex.pool.shutdown()
    report = save()
    plot(results, baselines, out.with_suffix(".png"))
    print(markdown(results, baselines))
    print(f"\nwrote {out} and {out.with_suffix('.png')} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
