"""LSP latency and suggestion quality: a real LSP client replays typing through real source files.

The files are read at run time from installed packages that the corpus builder excludes by name
(training/data.py's EVAL_EXCLUDE_PACKAGES; fallback: pygls, lsprotocol), so the model never trained
on them and nothing third-party is copied into the repo. For each sampled line the line is blanked
(its indentation kept), then typed one character at a time as an editor would: a didChange and an
automatic textDocument/inlineCompletion per keystroke, `$/cancelRequest` for the request still
outstanding when the next key arrives.

With `--consecutive K`, K consecutive lines are blanked at each place and typed one after
another, an Enter (line break plus the next line's indentation) between them, as when writing new
code: the line starts after an Enter are reported apart from those at a new place.

Reported: request latency p50/p95 (answered requests, from the request to its answer's arrival;
all, line-start requests, and by the shape of the suggestion returned: single-line or multi-line
items), cancelled,
superseded, cache-hit and typed-through counts, the server's peak RSS, how well the suggestion
made at the start of each line matches the real line (exact next line; edit similarity), and the
acceptance rate a user would feel: of the suggestions answered (the rest of one being typed
through is the same suggestion), those the typist then typed in full (the next typed text starts
with it), beside the server's own counts (parafill/status `acceptance`: the typist never runs the
accept command, so the server infers them from what is typed next).

    python bench/lsp_latency.py                       # defaults: ~2-3 minutes on 2 cores
    python bench/lsp_latency.py --files 4 --lines 4   # quicker
    python bench/lsp_latency.py --lines 1 --consecutive 5   # writing 5 lines in a row per file
    python bench/lsp_latency.py --remote http://127.0.0.1:8000  # answered by `parafill serve-model`
Results: bench/results/lsp_latency.json
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import difflib
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from model.interface import SCHEDULES

ROOT = Path(__file__).resolve().parents[1]
FALLBACK_PACKAGES = ("pygls", "lsprotocol")
MIN_LINE_CHARS, MAX_LINE_CHARS = 12, 90
MIN_FILE_CHARS, MAX_FILE_CHARS = 2_000, 60_000


def excluded_packages() -> tuple[str, ...]:
    """EVAL_EXCLUDE_PACKAGES from training/data.py, read without importing it."""
    path = ROOT / "training" / "data.py"
    try:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "EVAL_EXCLUDE_PACKAGES" for t in node.targets
            ):
                return tuple(ast.literal_eval(node.value))
    except (OSError, SyntaxError, ValueError):
        pass
    return FALLBACK_PACKAGES


def package_files(packages: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for loc in spec.submodule_search_locations:
            for p in sorted(Path(loc).rglob("*.py")):
                size = p.stat().st_size
                if MIN_FILE_CHARS <= size <= MAX_FILE_CHARS and "test" not in p.name:
                    files.append(p)
    return files


def typable(line: str) -> bool:
    """A line worth typing: code (not comments/docstring-looking), moderate length."""
    s = line.strip()
    return (
        MIN_LINE_CHARS <= len(s) <= MAX_LINE_CHARS
        and not s.startswith(("#", '"', "'", "@"))
        and s.isascii()
    )


def pick_lines(text: str, k: int, rng: random.Random, run: int = 1) -> list[int]:
    """First lines of `k` non-overlapping runs of `run` consecutive typable lines."""
    lines = text.split("\n")
    ok = [i for i in range(5, len(lines) - run + 1) if all(map(typable, lines[i : i + run]))]
    rng.shuffle(ok)
    picked: list[int] = []
    for i in ok:
        if len(picked) == k:
            break
        if all(abs(i - j) >= run for j in picked):
            picked.append(i)
    return sorted(picked)


class Replay:
    def __init__(self, client: LanguageClient, typing_ms: float):
        self.client = client
        self.typing_ms = typing_ms
        self.latencies: list[float] = []
        self.line_start_latencies: list[float] = []
        self.enter_latencies: list[float] = []  # line starts reached by Enter (--consecutive)
        # answered requests by the suggestion's shape: "single-line" / "multi-line" items
        self.by_answer: dict[str, list[float]] = {"single-line": [], "multi-line": []}
        self.cancelled = 0
        self.errors = 0
        self.empty = 0
        self.exact = 0
        self.similarity: list[float] = []
        self.samples: list[dict] = []
        self.suggestions = 0  # suggestions answered (a typed-through rest is the same one)
        self.suggestions_taken = 0  # of them, those the next typed text starts with
        self._shown: tuple[int, str] | None = None  # (chars typed when shown, text), this line
        self.arrived: dict[asyncio.Future, float] = {}  # answered request -> when it arrived
        self._n = 0

    async def request(self, uri: str, line: int, col: int) -> tuple[str, asyncio.Future, float]:
        self._n += 1
        msg_id = f"bench-{self._n}"
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line, col),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
        )
        t0 = time.perf_counter()
        fut = asyncio.wrap_future(
            self.client.protocol.send_request(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
            )
        )
        # the answer's time is when it arrives, not when the replay next looks (after a keystroke)
        fut.add_done_callback(lambda _: self.arrived.setdefault(fut, time.perf_counter()))
        return msg_id, fut, t0

    async def settle(self, fut: asyncio.Future, t0: float, line_start: str = "") -> str | None:
        """Await a request; record its latency (and, with `line_start` "jump" or "enter", as a
        line-start request of that kind); return the first item's text."""
        try:
            res = await fut
        except Exception as exc:  # noqa: BLE001 - any error response counts, by kind
            self.arrived.pop(fut, None)
            if "cancel" in str(exc).lower():
                self.cancelled += 1
            else:
                self.errors += 1
            return None
        ms = (self.arrived.pop(fut, time.perf_counter()) - t0) * 1000
        self.latencies.append(ms)
        if line_start == "jump":
            self.line_start_latencies.append(ms)
        elif line_start == "enter":
            self.enter_latencies.append(ms)
        items = res.items if isinstance(res, types.InlineCompletionList) else (res or [])
        if not items:
            self.empty += 1
            return ""
        text = items[0].insert_text
        text = text if isinstance(text, str) else text.value
        self.by_answer["multi-line" if "\n" in text.strip("\n") else "single-line"].append(ms)
        return text

    def judge(self, text: str | None, i: int, content: str, after: str) -> None:
        """Count a suggestion answered when `i` characters of `content` were typed: accepted
        when the text typed next (the rest of the line, then `after`) starts with it."""
        if not text:
            return
        if self._shown is not None and i >= self._shown[0]:
            i0, shown = self._shown
            typed = content[i0:i]
            if shown.startswith(typed) and shown[len(typed) :] == text:
                return  # the rest of the same suggestion (typing-through)
        self._shown = (i, text)
        self.suggestions += 1
        self.suggestions_taken += (content[i:] + after).startswith(text)

    async def type_line(
        self,
        uri: str,
        version: int,
        line: int,
        indent: str,
        content: str,
        start: str = "jump",
        after: str = "",
    ) -> int:
        """Type `content` after `indent` on a blank line reached by `start` ("jump": a new
        place; "enter": Enter at the end of the line above), `after` being what is typed next
        (the next lines of a --consecutive run); returns the next document version."""
        col = len(indent)
        pending: tuple[str, asyncio.Future, float] | None = None
        self._shown = None
        _, fut, t0 = await self.request(uri, line, col)
        first = await self.settle(fut, t0, line_start=start)  # the suggestion at the line start
        self.judge(first, 0, content, after)
        if first is not None:
            got = first.split("\n", 1)[0].strip()
            self.exact += int(got == content.strip())
            self.similarity.append(difflib.SequenceMatcher(None, got, content.strip()).ratio())
            self.samples.append({"uri": uri, "line": line + 1, "want": content, "got": first})
        for i, ch in enumerate(content):
            await asyncio.sleep(self.typing_ms / 1000)
            if pending is not None and not pending[1].done():
                self.client.protocol.notify("$/cancelRequest", types.CancelParams(id=pending[0]))
            if pending is not None:
                self.judge(await self.settle(pending[1], pending[2]), i, content, after)
            version += 1
            self.client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    content_changes=[
                        types.TextDocumentContentChangePartial(
                            range=types.Range(types.Position(line, col), types.Position(line, col)),
                            text=ch,
                        )
                    ],
                )
            )
            col += 1
            pending = await self.request(uri, line, col)
        if pending is not None:
            self.judge(await self.settle(pending[1], pending[2]), len(content), content, after)
        return version

    def press_enter(self, uri: str, version: int, line: int, col: int, indent: str) -> int:
        """A line break at (line, col) followed by the next line's indentation (auto-indent)."""
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version + 1),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(types.Position(line, col), types.Position(line, col)),
                        text="\n" + indent,
                    )
                ],
            )
        )
        return version + 1


def as_dict(obj):
    """pygls returns untyped JSON objects as namedtuples: turn them back into dicts."""
    if hasattr(obj, "_asdict"):
        return {k: as_dict(v) for k, v in obj._asdict().items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float | None:
    """The server's peak (VmHWM) or current (VmRSS) resident memory, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def sample_rss(pid: int, out: list[float], period: float = 1.0) -> None:
    while True:
        rss = peak_rss_mb(pid, "VmRSS")
        if rss is not None:
            out.append(round(rss, 1))
        await asyncio.sleep(period)


def pct(data: list[float], q: float) -> float | None:
    if not data:
        return None
    s = sorted(data)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def percentiles(data: list[float]) -> dict:
    return {"p50": pct(data, 0.5), "p95": pct(data, 0.95), "n": len(data)}


async def run(args) -> dict:
    rng = random.Random(args.seed)
    packages = tuple(args.packages.split(",")) if args.packages else excluded_packages()
    files = package_files(packages)
    if not files:
        raise SystemExit(f"no source files found in installed packages {packages}")
    rng.shuffle(files)
    files = files[: args.files]

    client = LanguageClient("parafill-bench", "0.1")
    messages: list[str] = []

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def _log(params: types.LogMessageParams) -> None:
        pass

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _show(params: types.ShowMessageParams) -> None:
        messages.append(params.message)
        print("server:", params.message, file=sys.stderr)

    cmd = [sys.executable, "-m", "lsp_server.cli", "serve"] + (
        ["--model", args.model] if args.model else []
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    await client.start_io(*cmd, env=env)
    pid = client._server.pid
    t0 = time.perf_counter()
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={"parafill": settings_for(args)},
        )
    )
    client.initialized(types.InitializedParams())
    init_ms = (time.perf_counter() - t0) * 1000
    replay = Replay(client, args.typing_ms)
    # wait for the model so load time is not counted as request latency
    warm_uri = "file:///bench/warmup.py"
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            types.TextDocumentItem(warm_uri, "python", 1, "x = 1\ny = \n")
        )
    )
    _, fut, _ = await replay.request(warm_uri, 1, 4)
    await fut
    load_s = time.perf_counter() - t0
    rss_ready = peak_rss_mb(pid, "VmRSS")
    rss_series: list[float] = []
    sampler = asyncio.create_task(sample_rss(pid, rss_series))
    lines_typed = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        uri = path.as_uri()
        run_len = max(1, args.consecutive)
        targets = pick_lines(text, args.lines, rng, run_len)
        lines = text.split("\n")
        for target in targets:
            chunk = lines[target : target + run_len]
            indents = [ln[: len(ln) - len(ln.lstrip())] for ln in chunk]
            doc_lines = lines[:target] + [indents[0]] + lines[target + run_len :]
            client.text_document_did_open(
                types.DidOpenTextDocumentParams(
                    types.TextDocumentItem(uri, "python", 1, "\n".join(doc_lines))
                )
            )
            version = 1
            for j, ln in enumerate(chunk):
                if j and args.pause_ms:  # the user stops at the line's end, then presses Enter
                    await asyncio.sleep(args.pause_ms / 1000)
                if j:
                    end = len(indents[j - 1]) + len(chunk[j - 1].strip())
                    version = replay.press_enter(uri, version, target + j - 1, end, indents[j])
                after = "".join(f"\n{indents[k]}{chunk[k].strip()}" for k in range(j + 1, run_len))
                version = await replay.type_line(
                    uri,
                    version,
                    target + j,
                    indents[j],
                    ln.strip(),
                    "enter" if j else "jump",
                    after,
                )
                lines_typed += 1
            client.text_document_did_close(
                types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
            )
    st = await client.protocol.send_request_async("parafill/status", {})
    status = as_dict(st)
    rss = peak_rss_mb(pid)
    sampler.cancel()
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()

    n = len(replay.similarity)
    return {
        "packages": list(packages),
        "files": [str(p) for p in files],
        "lines_typed": lines_typed,
        "keystrokes": replay._n - 1,
        "typing_ms": args.typing_ms,
        "debounce_ms": args.debounce_ms,
        "settings": settings_for(args),
        "initialize_ms": round(init_ms, 1),
        "model_ready_s": round(load_s, 2),
        "latency_ms": {
            "p50": pct(replay.latencies, 0.5),
            "p95": pct(replay.latencies, 0.95),
            "mean": round(statistics.mean(replay.latencies), 1) if replay.latencies else None,
            "n": len(replay.latencies),
        },
        "consecutive": run_len,
        "pause_ms": args.pause_ms,
        "line_start_latency_ms": percentiles(replay.line_start_latencies),
        "enter_latency_ms": percentiles(replay.enter_latencies),
        "answer_latency_ms": {k: percentiles(v) for k, v in replay.by_answer.items()},
        "answered_empty": replay.empty,
        "cancelled_client": replay.cancelled,
        "errors": replay.errors,
        "server_messages": messages,
        "server": {
            k: status.get(k)
            for k in (
                "model",
                "device",
                "requests",
                "completed",
                "cancelled",
                "superseded",
                "cacheHits",
                "typedThrough",
                "contextReused",
                "fallbacks",
                "deadlineCuts",
                "prefetched",
                "prefetchUsed",
                "latencyMs",
            )
        },
        "peak_rss_mb": None if rss is None else round(rss, 1),
        "rss_when_ready_mb": None if rss_ready is None else round(rss_ready, 1),
        "rss_series_mb": rss_series[:: max(1, len(rss_series) // 60)],
        "exact_next_line": round(replay.exact / n, 3) if n else None,
        # what a user would feel: suggestions the next typed text starts with, of those answered
        "acceptance": {
            "suggestions": replay.suggestions,
            "accepted": replay.suggestions_taken,
            "rate": round(replay.suggestions_taken / replay.suggestions, 3)
            if replay.suggestions
            else None,
            "server": status.get("acceptance"),  # parafill/status: inferred from the typing
        },
        "edit_similarity": round(statistics.mean(replay.similarity), 3) if n else None,
        "line_samples": replay.samples[: args.keep_samples],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def settings_for(args) -> dict:
    settings = {"debounceMs": args.debounce_ms}
    if args.context_tokens:
        settings["contextTokens"] = args.context_tokens
    if args.schedule:
        settings["schedule"] = args.schedule
    if args.steps:
        settings["steps"] = args.steps
    if args.precision:
        settings["precision"] = args.precision
    if args.no_context_reuse:
        settings["contextReuse"] = False
    if args.deadline_ms is not None:
        settings["multilineDeadlineMs"] = args.deadline_ms
    if args.log_file:
        settings["logFile"] = args.log_file
    if args.no_prefetch:
        settings["prefetch"] = False
    if args.no_length_estimate:
        settings["lengthEstimate"] = False
    if args.remote:  # the model server (`parafill serve-model`) answers, over HTTP
        settings["backend"] = "remote"
        settings["remote.url"] = args.remote
    return settings


def _acceptance_rows(acc: dict | None) -> list[tuple[str, str]]:
    if not acc:
        return []
    rate = acc.get("rate")
    rows = [
        (
            "suggestions accepted (the next typed text starts with it)",
            f"{acc['accepted']} / {acc['suggestions']}"
            + ("" if rate is None else f"  ({100 * rate:.1f} %)"),
        )
    ]
    srv = acc.get("server") or {}
    if srv:
        counts = " / ".join(str(srv.get(k)) for k in ("shown", "accepted", "partial", "dismissed"))
        rows.append(
            (
                "server: shown / accepted / in part / dismissed",
                f"{counts}  (pending {srv.get('pending')})",
            )
        )
    return rows


def _pair(srv: dict, a: str, b: str) -> str:
    return f"{srv.get(a)} / {srv.get(b)}"


def print_table(r: dict) -> None:
    lat, ls, srv = r["latency_ms"], r["line_start_latency_ms"], r["server"]
    en = r.get("enter_latency_ms") or {"n": 0}
    rows = [
        (
            "files / lines / keystrokes",
            f"{len(r['files'])} / {r['lines_typed']} / {r['keystrokes']}",
        ),
        ("initialize (ms)", r["initialize_ms"]),
        ("model ready (s)", r["model_ready_s"]),
        ("latency p50 / p95 (ms), answered", f"{lat['p50']} / {lat['p95']}  (n={lat['n']})"),
        (
            "line-start latency p50 / p95 (ms), new place",
            f"{ls['p50']} / {ls['p95']}  (n={ls['n']})",
        ),
        (
            "line start after Enter p50 / p95 (ms)",
            f"{en['p50']} / {en['p95']}  (n={en['n']})" if en["n"] else "-",
        ),
        *(
            (
                f"answered with a {kind} suggestion p50 / p95 (ms)",
                f"{v['p50']} / {v['p95']}  (n={v['n']})",
            )
            for kind, v in (r.get("answer_latency_ms") or {}).items()
        ),
        (
            "server model time p50 / p95 (ms)",
            f"{(srv['latencyMs'] or {}).get('p50')} / {(srv['latencyMs'] or {}).get('p95')}",
        ),
        *(
            (
                f"  model time for {kind} fills p50 / p95 (ms)",
                f"{v['p50']} / {v['p95']}  (n={v['n']})",
            )
            for kind, v in ((srv["latencyMs"] or {}).get("byKind") or {}).items()
        ),
        ("context encodings reused", srv.get("contextReused")),
        ("second decodes (fallback end rule)", srv.get("fallbacks")),
        ("multi-line fills cut at a finished line by the deadline", srv.get("deadlineCuts")),
        (
            "next lines prefetched / requests answered by one",
            _pair(srv, "prefetched", "prefetchUsed"),
        ),
        (
            "cancelled (client) / server cancelled / superseded",
            f"{r['cancelled_client']} / {srv['cancelled']} / {srv['superseded']}",
        ),
        ("cache hits / typed-through", f"{srv['cacheHits']} / {srv['typedThrough']}"),
        ("answered empty / errors", f"{r['answered_empty']} / {r['errors']}"),
        ("server peak RSS (MB)", r["peak_rss_mb"]),
        ("server RSS when the model was ready (MB)", r["rss_when_ready_mb"]),
        ("exact next line", r["exact_next_line"]),
        ("edit similarity", r["edit_similarity"]),
        *_acceptance_rows(r.get("acceptance")),
    ]
    w = max(len(k) for k, _ in rows)
    print(
        f"parafill LSP replay: {srv['model']} on {srv['device']}, packages {', '.join(r['packages'])}"
    )
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8, help="source files sampled")
    ap.add_argument("--lines", type=int, default=5, help="places typed per file")
    ap.add_argument(
        "--consecutive",
        type=int,
        default=1,
        help="lines typed at each place, one after another with Enter between them",
    )
    ap.add_argument("--typing-ms", type=float, default=80.0, help="delay between keystrokes")
    ap.add_argument("--debounce-ms", type=int, default=25, help="server-side debounce setting")
    ap.add_argument("--context-tokens", type=int, default=None, help="server contextTokens")
    ap.add_argument("--schedule", choices=SCHEDULES, default=None)
    ap.add_argument("--steps", type=int, default=None, help="fixed schedule: steps")
    ap.add_argument("--log-file", default=None, help="the server's log file")
    ap.add_argument("--precision", choices=["auto", "int8", "fp32"], default=None)
    ap.add_argument("--no-context-reuse", action="store_true", help="encode every context in full")
    ap.add_argument("--no-prefetch", action="store_true", help="no next-line prefetch (server)")
    ap.add_argument(
        "--remote", default=None, metavar="URL", help="backend remote: the model server at URL"
    )
    ap.add_argument(
        "--no-length-estimate",
        action="store_true",
        help="line fills end by the PAD budget alone (server lengthEstimate false)",
    )
    ap.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        help="--consecutive: pause at a line's end before Enter",
    )
    ap.add_argument(
        "--deadline-ms", type=int, default=None, help="server multilineDeadlineMs (0: none)"
    )
    ap.add_argument(
        "--packages", default=None, help="comma-separated packages (default: EVAL_EXCLUDE_PACKAGES)"
    )
    ap.add_argument("--model", default=None, help="checkpoint directory (default: shipped)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-samples", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lsp_latency.json"))
    args = ap.parse_args(argv)
    result = asyncio.run(run(args))
    result["command"] = "python bench/lsp_latency.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
