"""Suggestions at fixed cursors, with timing taken out: a before/after check for refactors.

The LSP replay (bench/lsp_latency.py) types as a user does, so which requests run, which are
cancelled and where a multi-line deadline cuts depend on the machine's speed: two runs of the same
code differ. This bench asks the real server (`parafill serve`, shipped model, over a real LSP
client) one request at a time at seeded cursors in unseen files (the same packages as the replay),
with no deadline, no prefetch and no debounce, so the suggestions depend on the code alone:

- an automatic inline completion at each cursor (line starts and mid-line), and
- an explicit one (several sampled candidates, seeded) at every third cursor.

    python bench/golden_suggestions.py --out /tmp/before.json     # on the old code
    python bench/golden_suggestions.py --out /tmp/after.json      # on the new code
    python bench/golden_suggestions.py --compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from lsp_latency import excluded_packages, package_files, typable

EXPLICIT_EVERY = 3  # every third cursor also gets an explicit request


def cursors(text: str, k: int, rng: random.Random) -> list[tuple[int, int]]:
    """`k` (line, column) cursors on typable lines: the indentation's end or a mid-line column."""
    lines = text.split("\n")
    ok = [i for i in range(5, len(lines)) if typable(lines[i])]
    rng.shuffle(ok)
    out = []
    for i in sorted(ok[:k]):
        ln = lines[i]
        indent = len(ln) - len(ln.lstrip())
        col = indent if rng.random() < 0.5 else rng.randrange(indent + 1, len(ln))
        out.append((i, col))
    return out


async def ask(client: LanguageClient, uri: str, line: int, col: int, invoked: bool) -> list[str]:
    kind = (
        types.InlineCompletionTriggerKind.Invoked
        if invoked
        else types.InlineCompletionTriggerKind.Automatic
    )
    res = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri),
            position=types.Position(line, col),
            context=types.InlineCompletionContext(trigger_kind=kind),
        )
    )
    items = res.items if isinstance(res, types.InlineCompletionList) else (res or [])
    return [i.insert_text if isinstance(i.insert_text, str) else i.insert_text.value for i in items]


async def run(args) -> dict:
    rng = random.Random(args.seed)
    files = package_files(excluded_packages())
    rng.shuffle(files)
    files = files[: args.files]
    client = LanguageClient("parafill-golden", "0.1")
    client.feature(types.WINDOW_LOG_MESSAGE)(lambda params: None)
    cmd = [sys.executable, "-m", "lsp_server.cli", "serve"]
    await client.start_io(*cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    settings = {"debounceMs": 0, "multilineDeadlineMs": 0, "prefetch": False, "cacheSize": 0}
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={"parafill": settings},
        )
    )
    client.initialized(types.InitializedParams())
    cases = []
    t0 = time.perf_counter()
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        uri = path.as_uri()
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text))
        )
        for n, (line, col) in enumerate(cursors(text, args.cursors, rng)):
            case = {"file": path.name, "line": line, "col": col}
            case["automatic"] = await ask(client, uri, line, col, False)
            if n % EXPLICIT_EVERY == 0:
                case["explicit"] = await ask(client, uri, line, col, True)
            cases.append(case)
        client.text_document_did_close(
            types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
        )
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - t0, 1),
        "cases": cases,
    }


def compare(a_path: str, b_path: str) -> int:
    a = json.loads(Path(a_path).read_text())["cases"]
    b = json.loads(Path(b_path).read_text())["cases"]
    if len(a) != len(b):
        print(f"different cursors: {len(a)} vs {len(b)}")
        return 1
    diff = 0
    for x, y in zip(a, b):
        for key in ("automatic", "explicit"):
            if x.get(key) != y.get(key):
                diff += 1
                print(f"{x['file']}:{x['line']}:{x['col']} {key}: {x.get(key)!r} != {y.get(key)!r}")
    asked = sum(1 + ("explicit" in x) for x in a)
    print(f"{asked - diff} of {asked} requests gave the same suggestions")
    return 1 if diff else 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--cursors", type=int, default=8, help="cursors per file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "golden_suggestions.json"))
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        raise SystemExit(compare(*args.compare))
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    n = len(result["cases"])
    print(f"{n} cursors in {result['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
