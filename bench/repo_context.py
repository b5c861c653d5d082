"""Context beyond the file (issue #23): retrieval, quality, latency and the index's cost.

On a real repository the shipped corpus never read (pygls: training/data.py keeps it out,
EVAL_EXCLUDE_PACKAGES), copied into a temporary workspace folder as it is installed:

- cross-file lines: code lines using a name another workspace file defines (an imported name,
  or `module.name` of an imported module); other lines: code lines using no imported name;
- retrieval: the cursor at the start of a cross-file line (the line blanked), the packed context
  (lsp_server/context/) holds the definitions of every such name on it: per line and per name,
  at the shipped window (contextTokens 400, share 0.25 and 0.5) and at a 2,048-token window;
  and counted strictly (`..._called`): a class the line calls only with more than its header line;
- quality: exact first line and edit similarity of the shipped model's suggestion at those
  cursors with and without the context, in one run (the same model, alternating), on cross-file
  lines and on other lines; decoding is greedy and context reuse off, so a run repeats exactly
  (run-to-run noise: none; `--repeat` checks it);
- latency: typing each sampled line a few characters at a time, a completion per step, without
  the context, with it, and with it in rank order instead of file order, in turn (context reuse
  on, as the server runs): p50/p95 of the whole completion, the median of each step's added
  time (with minus without, side by side) and its 95 % interval, how often the context
  encoding was reused, and the packing's own time;
- development: the retrieval on the packages the ranking and packing were chosen on (httpx,
  starlette, uvicorn, fastapi, anyio), so that pygls stays a measurement;
- packing: the packing's own time with none, 8 and all (24) of pygls's files open as other
  documents (their windows ranked by overlap at every completion);
- the index: build time and memory (tracemalloc of what the index holds; RSS growth) on a
  1,000-file workspace (the first 1,000 files of the standard library, its tests included, that
  pass the filters).

    python bench/repo_context.py --out bench/results/repo_context.json
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import gc
import json
import os
import random
import re
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsp_server.context import RepoContext, files
from lsp_server.context.chunks import IDENT_RE
from lsp_server.context.imports import bindings
from lsp_server.context.index import WorkspaceIndex
from lsp_server.syntax import Document

PACKAGE = "pygls"
# where the ranking and packing were chosen (the `development` part): real repositories
# installed beside pygls; pygls itself is only measured
DEVELOPMENT = ("httpx", "starlette", "uvicorn", "fastapi", "anyio")


@dataclass
class Task:
    rel: str
    line: int
    indent: int
    truth: str
    needs: list[tuple[str, str]]  # (path, symbol) whose definition the line uses


def copy_package(name: str, dest: Path) -> Path:
    mod = __import__(name)
    src = Path(mod.__file__).parent
    shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def code_line(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith(("#", "import ", "from ", '"', "'", "@")) and len(s) > 3


def import_lines(text: str) -> set[int]:
    """Lines inside import statements (not uses of a name)."""
    from lsp_server import syntax

    tree = syntax.parse(text, "python")
    out: set[int] = set()
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        for c in node.named_children:
            if c.type in ("import_statement", "import_from_statement"):
                out |= set(range(c.start_point[0], c.end_point[0] + 1))
            elif c.type in ("block", "if_statement", "try_statement", "function_definition",
                            "class_definition", "decorated_definition", "else_clause",
                            "except_clause"):  # fmt: skip
                stack.append(c)
    return out


def tasks(ws: Path, index: WorkspaceIndex) -> tuple[list[Task], list[Task]]:
    cross, other = [], []
    for path in sorted(ws.rglob("*.py")):
        rel = path.relative_to(ws).as_posix()
        text = path.read_text()
        binds = bindings(text, "python", rel, index.exists)
        defined = {}
        for b in binds:
            names = {c.names[0] for c in index.defs(b.path) if c.names}
            defined[b.name] = (b, names)
        lines = text.split("\n")
        in_doc = False
        skip = import_lines(text)
        for i, line in enumerate(lines):
            if i in skip:
                continue
            if line.count('"""') % 2 == 1:
                in_doc = not in_doc
                continue
            if in_doc or i < 5 or not code_line(line):
                continue
            ids = set(IDENT_RE.findall(line))
            needs = []
            for name, (b, names) in defined.items():
                if b.symbol is not None and name in ids and b.symbol in names:
                    needs.append((b.path, b.symbol))
                elif b.symbol is None:
                    for attr in ids & names:
                        if f"{name}.{attr}" in line.replace(" ", ""):
                            needs.append((b.path, attr))
            task = Task(rel, i, len(line) - len(line.lstrip()), line.strip(), sorted(set(needs)))
            if needs:
                cross.append(task)
            elif not ids & set(defined):
                other.append(task)
    return cross, other


def blanked(ws: Path, t: Task) -> tuple[Document, int]:
    lines = (ws / t.rel).read_text().split("\n")
    lines[t.line] = lines[t.line][: t.indent]
    text = "\n".join(lines)
    cursor = sum(len(ln) + 1 for ln in lines[: t.line]) + t.indent
    return Document.open((ws / t.rel).as_uri(), text, "python", 1), cursor


def retrieval(ws: Path, ctx: RepoContext, cross: list[Task], budget: int) -> dict:
    """The share of lines whose every other-file name has its definition packed; `..._called`:
    and where the line calls a class, with more of it than its header line (the packing gives
    a class the file only names its header line first)."""
    lines_hit = names_hit = names = lines_called = 0
    for t in cross:
        ctx.previous.clear()
        doc, cursor = blanked(ws, t)
        packed = ctx.pack_for(doc, doc.text, cursor, budget)
        got = {
            (r.chunk.path, r.chunk.names[0]): piece
            for r, piece in zip(packed.chunks, packed.pieces, strict=True)
            if r.chunk.names
        }
        hit = [n in got for n in t.needs]
        lines_hit += all(hit)
        names_hit += sum(hit)
        names += len(hit)
        heads = {n for n in t.needs if n in got and got[n].rstrip("\n") == head_of(ctx, n)}
        lines_called += all(hit) and not any(re.search(rf"\b{n[1]}\s*\(", t.truth) for n in heads)
    return {
        "budget_tokens": budget,
        "lines": len(cross),
        "lines_all_found": round(lines_hit / max(1, len(cross)), 3),
        "lines_all_found_called": round(lines_called / max(1, len(cross)), 3),
        "names": names,
        "names_found": round(names_hit / max(1, names), 3),
    }


def head_of(ctx: RepoContext, need: tuple[str, str]) -> str | None:
    """The header line of the class `need` names (None for a definition that is not one)."""
    path, name = need
    return next((c.head for c in ctx.index.defs(path) if c.names[:1] == (name,) and c.head), None)


def development(package: str) -> list[dict]:
    """Retrieval at the shipped window's two shares on one development package."""
    from lsp_server.planner import Budgets

    shipped = Budgets().context_tokens
    with tempfile.TemporaryDirectory() as tmp:
        ws = copy_package(package, Path(tmp) / "ws")
        ctx = RepoContext()
        ctx.set_folders([str(ws)])
        ctx.index.wait_built()
        cross, _ = tasks(ws, ctx.index)
        out = [retrieval(ws, ctx, cross, int(shipped * s)) for s in (0.25, 0.5)]
    print(f"development {package}: {json.dumps(out)}", flush=True)
    return out


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def paired_interval(diffs: list[float], n: int = 2000, seed: int = 0) -> list[float]:
    """A 95 % bootstrap interval of the mean of paired differences (the lines resampled)."""
    rng = random.Random(seed)
    means = sorted(statistics.mean(rng.choices(diffs, k=len(diffs))) for _ in range(n))
    return [round(means[int(0.025 * n)], 3), round(means[int(0.975 * n) - 1], 3)]


def median_interval(xs: list[float], n: int = 2000, seed: int = 0) -> list[float]:
    """A 95 % bootstrap interval of the median of `xs`."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return [round(meds[int(0.025 * n)], 1), round(meds[int(0.975 * n) - 1], 1)]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def quality(ws, ctx, engine, settings, sample: list[Task], label: str) -> dict:
    from lsp_server.completion import Ask, Completer

    on = Completer(engine, replace(settings, repo_context=True), context=ctx)
    off = Completer(engine, replace(settings, repo_context=False), context=ctx)
    rows = []
    for t in sample:
        row = {"rel": t.rel, "line": t.line + 1, "truth": t.truth}
        for name, comp in (("off", off), ("on", on)):
            ctx.previous.clear()
            doc, cursor = blanked(ws, t)
            comp.typing.forget(doc.uri)
            done = await comp.complete(doc, cursor, Ask())
            fill = done.candidates[0].text if done.candidates else ""
            first = fill.strip().split("\n")[0].strip() if fill.strip() else ""
            row[name] = {"fill": first, "chunks": len(done.context.chunks)}
        rows.append(row)
    out = {"lines": len(rows), "rows": rows}
    for name in ("off", "on"):
        out[f"exact_{name}"] = sum(r[name]["fill"] == r["truth"] for r in rows)
        out[f"similarity_{name}"] = round(
            statistics.mean(similarity(r[name]["fill"], r["truth"]) for r in rows), 3
        )
    out["same_fill"] = sum(r["on"]["fill"] == r["off"]["fill"] for r in rows)
    diffs = [similarity(r["on"]["fill"], r["truth"]) - similarity(r["off"]["fill"], r["truth"])
             for r in rows]  # fmt: skip
    out["similarity_change_ci95"] = paired_interval(diffs)
    print(
        f"quality {label}: exact {out['exact_off']} -> {out['exact_on']} of {len(rows)}, "
        f"similarity {out['similarity_off']} -> {out['similarity_on']}, "
        f"same fill {out['same_fill']}, change 95 % {out['similarity_change_ci95']}",
        flush=True,
    )
    return out


async def latency(ws, ctx, engine, settings, sample: list[Task], every: int) -> dict:
    from lsp_server.completion import Ask, Completer

    by_rank = RepoContext(ctx.index)  # the same index, the best chunk last (not file order)
    by_rank.order = "rank"
    comps = {
        "off": Completer(engine, replace(settings, repo_context=False), context=ctx),
        "on": Completer(engine, replace(settings, repo_context=True), context=ctx),
        "on_rank_order": Completer(engine, replace(settings, repo_context=True), context=by_rank),
    }
    names = list(comps)
    ms = {k: [] for k in names}
    reused = dict.fromkeys(names, 0)
    typing = {k: [0, 0] for k in names}  # reused / completions after a line's first
    pack_ms = []
    n = 0
    for t in sample:
        doc0, cursor0 = blanked(ws, t)
        for k in range(0, min(len(t.truth), 4 * every) + 1, every):
            text = doc0.text[:cursor0] + t.truth[:k] + doc0.text[cursor0:]
            for name in names[n % 3 :] + names[: n % 3]:  # each first in turn
                comp = comps[name]
                doc = Document.open(doc0.uri, text, "python", k + 1)
                comp.typing.forget(doc.uri)
                before = engine.stats.context_reused
                t0 = time.perf_counter()
                await comp.complete(doc, cursor0 + k, Ask())
                ms[name].append((time.perf_counter() - t0) * 1000)
                hit = engine.stats.context_reused > before  # (a fallback decode counts too)
                reused[name] += hit
                if k > 0:
                    typing[name][0] += hit
                    typing[name][1] += 1
                if name == "on" and ctx.last_ms is not None:
                    pack_ms.append(ctx.last_ms)
            n += 1
    out = {"completions": n}
    for name in names:
        out[name] = {
            "p50_ms": round(statistics.median(ms[name]), 1),
            "p95_ms": round(pct(ms[name], 0.95), 1),
            "context_reused": round(reused[name] / max(1, n), 3),
            "reused_while_typing": round(typing[name][0] / max(1, typing[name][1]), 3),
        }
    out["pack_p50_ms"] = round(statistics.median(pack_ms), 2) if pack_ms else None
    out["pack_p95_ms"] = round(pct(pack_ms, 0.95), 2) if pack_ms else None
    out["median_added_ms"] = round(out["on"]["p50_ms"] - out["off"]["p50_ms"], 1)
    # the same step's completions side by side (adjacent in time, the same text): steadier
    # under a shared machine's noise than the difference of the two medians
    paired = [a - b for a, b in zip(ms["on"], ms["off"], strict=True)]
    out["median_paired_added_ms"] = round(statistics.median(paired), 1)
    out["paired_added_ci95_ms"] = median_interval(paired)
    out["median_added_ms_rank_order"] = round(
        out["on_rank_order"]["p50_ms"] - out["off"]["p50_ms"], 1
    )
    print(f"latency: {json.dumps(out)}", flush=True)
    return out


def packing(ws: Path, cross: list[Task], budget: int, opens=(0, 8, 32), rounds: int = 3) -> dict:
    """The packing's own time (ranking included) at the cross-file lines' cursors, with none,
    some and many other documents open in the editor (each a pygls file, its windows ranked by
    overlap at every completion), each cursor `rounds` times as keystrokes would repeat it."""
    sample = cross[:: max(1, len(cross) // 32)][:32]
    docs = [blanked(ws, t) for t in sample]
    others = [
        Document.open(p.as_uri(), p.read_text(), "python", 1) for p in sorted(ws.rglob("*.py"))
    ]
    out = {}
    for n in opens:
        ctx = RepoContext()
        ctx.set_folders([str(ws)])
        ctx.index.wait_built()
        for other in others[:n]:
            ctx.opened(other)
        ms = []
        for _ in range(rounds):
            for doc, cursor in docs:
                t0 = time.perf_counter()
                ctx.pack_for(doc, doc.text, cursor, budget)
                ms.append((time.perf_counter() - t0) * 1000)
        out[f"open_{min(n, len(others))}"] = {
            "p50_ms": round(statistics.median(ms), 2),
            "p95_ms": round(pct(ms, 0.95), 2),
        }
    print(f"packing: {json.dumps(out)}", flush=True)
    return out


MARKERS = {  # how a file's chunks are marked with its path (lsp_server/context/pack.py path_line)
    "path": lambda c, path: f"{c} {path}\n",
    "file": lambda c, path: f"{c} file: {path}\n",
    "none": lambda c, path: "",
}


def use_marker(name: str) -> None:
    """Mark each file's packed chunks the `name` way (in place of pack.path_line; the path as
    it writes it)."""
    from lsp_server.context import pack

    shipped = getattr(pack, "shipped_path_line", pack.path_line)
    pack.shipped_path_line = shipped

    def path_line(path: str, language: str, here: str | None = None) -> str:
        c = pack.comment(language)
        return MARKERS[name](c, shipped(path, language, here)[len(c) + 1 : -1])

    pack.path_line = path_line


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def index_cost(n_files: int) -> dict:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        k = 0
        ignores = files.Ignores()
        for p in sorted(stdlib.rglob("*.py")):
            if "site-packages" in p.parts:
                continue
            dest = ws / p.relative_to(stdlib)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
            if files.allowed(str(dest), [str(ws.resolve())], ignores) is not None:
                dest.unlink()  # (a file the index would leave out: not counted)
                continue
            k += 1
            if k >= n_files:
                break
        size_mb = sum(p.stat().st_size for p in ws.rglob("*.py")) / 1e6
        gc.collect()
        rss0 = rss_kb()
        index = WorkspaceIndex()
        t0 = time.perf_counter()
        index.set_folders([str(ws)])
        index.wait_built(300)
        build_s = time.perf_counter() - t0
        gc.collect()
        rss1 = rss_kb()
        st = index.status()
        tracemalloc.start()
        index2 = WorkspaceIndex()
        index2.set_folders([str(ws)])
        index2.wait_built(600)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del index2
    out = {
        "files": st["files"],
        "source_mb": round(size_mb, 1),
        "definitions": st["definitions"],
        "build_s": round(build_s, 2),
        "held_mb_tracemalloc": round(held / 1e6, 1),
        "rss_growth_mb": round((rss1 - rss0) / 1e3, 1),
    }
    print(f"index: {json.dumps(out)}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--package", default=PACKAGE)
    ap.add_argument("--quality", type=int, default=40, help="lines of each kind for quality")
    ap.add_argument("--latency", type=int, default=12, help="lines typed for latency")
    ap.add_argument("--every", type=int, default=3, help="characters typed between completions")
    ap.add_argument("--index-files", type=int, default=1000)
    ap.add_argument(
        "--parts",
        default="retrieval,quality,latency,index,markers,packing",
        help="also: development",
    )
    ap.add_argument("--repeat", action="store_true", help="the quality run twice (noise)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    from lsp_server.config import Settings
    from lsp_server.planner import Budgets

    out: dict = {
        "package": args.package,
        "commit": os.popen("git rev-parse --short HEAD").read().strip(),
    }
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        ws = copy_package(args.package, Path(tmp) / "ws")
        ctx = RepoContext()
        ctx.set_folders([str(ws)])
        ctx.index.wait_built()
        cross, other = tasks(ws, ctx.index)
        out["cross_lines"], out["other_lines"] = len(cross), len(other)
        print(f"{args.package}: {len(cross)} cross-file lines, {len(other)} others", flush=True)
        if "retrieval" in parts:
            shipped = Budgets().context_tokens
            out["retrieval"] = [
                {"window": 512, "share": s, **retrieval(ws, ctx, cross, int(shipped * s))}
                for s in (0.25, 0.5)
            ] + [
                {"window": 2048, "share": s, **retrieval(ws, ctx, cross, int(2048 * 0.8 * s))}
                for s in (0.25, 0.5)
            ]
            for r in out["retrieval"]:
                print(f"retrieval {json.dumps(r)}", flush=True)
        if "packing" in parts:
            out["packing"] = packing(ws, cross, int(Budgets().context_tokens * 0.25))
        if parts & {"quality", "latency"}:
            from lsp_server.engine import Engine

            engine = Engine(cache_size=0)
            engine.load(None, "cpu", "auto")
            assert engine.wait_ready(), engine.error
            settings = replace(Settings(), multiline_deadline_ms=0, prefetch=False, debounce_ms=0)
            rng = random.Random(args.seed)
            qc = rng.sample(cross, min(args.quality, len(cross)))
            qo = rng.sample(other, min(args.quality, len(other)))
            if "quality" in parts:
                plain = replace(settings, context_reuse=False)
                runs = 2 if args.repeat else 1
                out["quality"] = []
                for _ in range(runs):
                    out["quality"].append(
                        {
                            "cross": asyncio.run(quality(ws, ctx, engine, plain, qc, "cross")),
                            "other": asyncio.run(quality(ws, ctx, engine, plain, qo, "other")),
                        }
                    )
            if "markers" in parts:  # the path marking the shipped model reads best
                plain = replace(settings, context_reuse=False)
                out["markers"] = {}
                for name in MARKERS:
                    use_marker(name)
                    q = asyncio.run(quality(ws, ctx, engine, plain, qc, f"cross, marker {name}"))
                    out["markers"][name] = {k: v for k, v in q.items() if k != "rows"}
                use_marker("path")
            if "latency" in parts:
                lat = rng.sample(cross, min(args.latency, len(cross)))
                out["latency"] = asyncio.run(latency(ws, ctx, engine, settings, lat, args.every))
            engine.close()
    if "development" in parts:  # retrieval on the packages the ranking was chosen on
        out["development"] = {p: development(p) for p in DEVELOPMENT}
    if "index" in parts:
        out["index"] = index_cost(args.index_files)
    out["seconds"] = round(time.time() - t_start)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
