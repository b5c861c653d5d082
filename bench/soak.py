"""Soak: `parafill serve` under long and hostile traffic, over raw stdio (issue #16's bench).

Phases, each on a real server process, with the server's resident memory (VmRSS, /proc) read
over time and per message:

- storm: 1,000 automatic inline completions in one document, each cancelled ($/cancelRequest)
  as the next one is sent; every request must be answered (a result or "cancelled"), then the
  latency of automatic requests after the storm;
- completions: 5,000 inline completions (4 in 5 automatic, 1 in 5 invoked) over 20 documents
  (the project's own source files), one after another;
- changes: 20,000 didChange (typing a line and deleting it again, so the text keeps its size),
  the server's copy checked against ours every 1,000 (parafill/status sha256); RSS growth per
  message = the slope of RSS over the messages (and end minus start over their count);
- bigfiles: a 10 MB file, a 1 MB one-line file (a Python data literal, and minified JavaScript),
  a binary file, an empty file: open (until a status request after it is answered), requests
  (request to answer), keystrokes (a didChange, then a request), RSS after open and after close.

The traffic phases run on the fake backend (tests/fake_infiller.py: the storm with 8 steps of
20 ms a fill, like the shipped model's 0.1-0.2 s; the others instant) so that 26,000 messages take
minutes on a 2-core machine, not hours; `--real` runs them on the shipped model. The big files run
on the shipped model (their latency is the model's), and on the fake backend with --fake-bigfiles.

    python bench/soak.py                        # ~5-10 minutes on 2 cores
    python bench/soak.py --phases bigfiles      # the big files only
    python bench/soak.py --storm 200 --completions 500 --changes 2000   # quicker
Results: bench/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from lsp_latency import pct, peak_rss_mb

FAKE = ["--backend", "fake_infiller:load"]
PHASES = ("storm", "completions", "changes", "bigfiles")
TARGET_KB_PER_MESSAGE = 1.0
TARGET_ONE_LINE_MS = 300.0
ANSWER_S = 120.0  # a request not answered by then counts as unanswered


def summary(ms: list[float]) -> dict:
    return {"p50": pct(ms, 0.5), "p95": pct(ms, 0.95), "max": pct(ms, 1.0), "n": len(ms)}


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of (x, y) points."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


def utf16(s: str) -> int:
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


class Server:
    """`parafill serve` over raw stdio: framed JSON-RPC, our own ids, futures per request."""

    def __init__(self, args: list[str], log: Path):
        self.cmd = [sys.executable, "-m", "lsp_server.cli", "serve", *args]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.next_id = 0
        self.shown: list[str] = []
        self.sent = 0  # messages sent
        self.series: list[dict] = []  # RSS over time
        self.t0 = time.perf_counter()

    async def start(self, options: dict) -> float:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            env=env,
            cwd=ROOT,
            limit=2**26,
        )
        self.reader = asyncio.create_task(self._read())
        self.sampler = asyncio.create_task(self._sample())
        t0 = time.perf_counter()
        await self.request(
            "initialize",
            {
                "processId": None,
                "capabilities": {},
                "rootUri": None,
                "initializationOptions": options,
            },
        )
        self.notify("initialized", {})
        return time.perf_counter() - t0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> float | None:
        return peak_rss_mb(self.pid, "VmRSS")

    async def _sample(self, period: float = 0.5) -> None:
        while True:
            rss = self.rss()
            if rss is not None:
                t = round(time.perf_counter() - self.t0, 2)
                self.series.append({"t": t, "rssMb": round(rss, 1), "messages": self.sent})
            await asyncio.sleep(period)

    def _write(self, msg: dict) -> None:
        body = json.dumps(msg, ensure_ascii=False).encode("utf-8", "surrogatepass")
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.sent += 1

    def notify(self, method: str, params) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    def send(self, method: str, params) -> tuple[int, asyncio.Future]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        fut.sent = time.perf_counter()
        self.pending[self.next_id] = fut
        self._write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id, fut

    async def request(self, method: str, params, timeout: float = ANSWER_S):
        _, fut = self.send(method, params)
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, timeout)

    async def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = await out.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            msg = json.loads(await out.readexactly(length))
            if "method" in msg:  # from the server
                if msg["method"] == "window/showMessage":
                    self.shown.append(msg["params"]["message"])
                if "id" in msg:  # a request (configuration, applyEdit, ...): answered plainly
                    self._write({"jsonrpc": "2.0", "id": msg["id"], "result": None})
                continue
            fut = self.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.answered = time.perf_counter()
                fut.set_result(msg)

    def open(self, uri: str, text: str, language: str = "python", version: int = 1) -> None:
        item = {"uri": uri, "languageId": language, "version": version, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": item})

    def change(self, uri: str, version: int, rng: tuple | None, text: str) -> None:
        change = {"text": text}
        if rng is not None:
            change["range"] = {
                "start": {"line": rng[0], "character": rng[1]},
                "end": {"line": rng[2], "character": rng[3]},
            }
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]},
        )

    def close(self, uri: str) -> None:
        self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def inline(self, uri: str, line: int, char: int, invoked: bool = False):
        return self.send(
            "textDocument/inlineCompletion",
            {
                "textDocument": {"uri": uri},
                "position": {"line": line, "character": char},
                "context": {"triggerKind": 1 if invoked else 2},
            },
        )

    async def status(self, uri: str | None = None) -> dict:
        msg = await self.request("parafill/status", {"uri": uri} if uri else {})
        return msg["result"]

    async def settled_rss(self) -> float:
        """RSS once everything sent has been handled (a status request answered after it)."""
        await self.status()
        return round(self.rss(), 2)

    async def configure(self, settings: dict) -> dict:
        """New settings; the status once they hold and no model is loading."""
        self.notify("workspace/didChangeConfiguration", {"settings": {"parafill": settings}})
        while True:
            st = await self.status()
            if st["loading"] is None and all(st["settings"][k] == v for k, v in settings.items()):
                return st
            await asyncio.sleep(0.05)

    async def wait_ready(self) -> dict:
        while True:
            st = await self.status()
            if st["state"] in ("ready", "error"):
                return st
            await asyncio.sleep(0.1)

    async def stop(self) -> int | None:
        with _suppress():
            await self.request("shutdown", None, timeout=30)
            self.notify("exit", None)
            await self.proc.stdin.drain()
            return await asyncio.wait_for(self.proc.wait(), 30)
        self.proc.kill()
        return await self.proc.wait()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], Exception)


def answered_ms(fut: asyncio.Future) -> float:
    return (fut.answered - fut.sent) * 1000


async def collect(futs: list[asyncio.Future]) -> dict:
    """Wait for every request; how many were answered with a result, with an error, not at all."""
    done, pending = await asyncio.wait(futs, timeout=ANSWER_S) if futs else (set(), set())
    results = [f.result() for f in done]
    errors: dict[str, int] = {}
    for r in results:
        if "error" in r:
            key = str(r["error"].get("code"))
            errors[key] = errors.get(key, 0) + 1
    return {
        "sent": len(futs),
        "answered": len(done),
        "unanswered": len(pending),
        "withResult": sum("result" in r for r in results),
        "errorsByCode": errors,
    }


def source_files(n: int) -> list[tuple[str, str]]:
    files = sorted((ROOT / "lsp_server").glob("*.py")) + sorted((ROOT / "model").glob("*.py"))
    files = [p for p in files if 2_000 <= p.stat().st_size <= 60_000]
    return [(p.as_uri(), p.read_text()) for p in files[:n]]


def positions(text: str, rnd: random.Random, k: int) -> list[tuple[int, int]]:
    lines = text.split("\n")
    out = []
    for _ in range(k):
        i = rnd.randrange(len(lines))
        n = utf16(lines[i])
        out.append((i, n if rnd.random() < 0.7 else rnd.randrange(n + 1)))
    return out


# ---- phases -------------------------------------------------------------------------------------
async def storm(srv: Server, n: int) -> dict:
    uri = "file:///soak/storm.py"
    text = "import os\n\ndef handler(request):\n    path = request.path\n    return \n"
    srv.open(uri, text)
    rss0 = await srv.settled_rss()
    before = await srv.status()
    futs, prev, t0 = [], None, time.perf_counter()
    for i in range(n):
        msg_id, fut = srv.inline(uri, 4, 11)
        futs.append(fut)
        if prev is not None:
            srv.notify("$/cancelRequest", {"id": prev})
        prev = msg_id
        if i % 50 == 0:
            await srv.proc.stdin.drain()
    await srv.proc.stdin.drain()
    out = await collect(futs)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    after = await srv.status()
    out["engine"] = {
        k: after[k] - before[k] for k in ("requests", "completed", "cancelled", "superseded")
    }
    after_ms = []
    for i in range(20):  # automatic requests after the storm, one at a time, as keys come
        srv.change(uri, 2 + i, (4, 11 + i, 4, 11 + i), "abcdefghijklmnopqrstuvwxyz"[i])
        _, fut = srv.inline(uri, 4, 12 + i)
        await asyncio.wait_for(fut, ANSWER_S)
        after_ms.append(answered_ms(fut))
        await asyncio.sleep(0.05)
    out["afterStormMs"] = summary(after_ms)
    rss1 = await srv.settled_rss()
    out["rssMb"] = {"before": rss0, "after": rss1}
    out["rssKbPerMessage"] = round((rss1 - rss0) * 1024 / max(1, 2 * n), 3)
    srv.close(uri)
    return out


async def completions(srv: Server, n: int, docs: int, seed: int) -> dict:
    rnd = random.Random(seed)
    files = source_files(docs)
    for uri, text in files:
        srv.open(uri, text)
    rss0 = await srv.settled_rss()
    before = await srv.status()
    auto, invoked, futs = [], [], []
    t0 = time.perf_counter()
    rss_points = []
    for i in range(n):
        uri, text = files[i % len(files)]
        ((line, char),) = positions(text, rnd, 1)
        ask = rnd.random() < 0.2
        _, fut = srv.inline(uri, line, char, invoked=ask)
        futs.append(fut)
        await asyncio.wait_for(fut, ANSWER_S)
        (invoked if ask else auto).append(answered_ms(fut))
        if (i + 1) % 500 == 0:
            rss_points.append((i + 1, await srv.settled_rss()))
    out = await collect(futs)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["documents"] = len(files)
    after = await srv.status()
    out["engine"] = {
        k: after[k] - before[k]
        for k in ("requests", "completed", "cacheHits", "typedThrough", "superseded", "errors")
    }
    out["automaticMs"] = summary(auto)
    out["invokedMs"] = summary(invoked)
    rss1 = await srv.settled_rss()
    out["rssMb"] = {"before": rss0, "after": rss1, "every500": rss_points}
    out["rssKbPerMessage"] = round((rss1 - rss0) * 1024 / max(1, n), 3)
    s = slope([(0, rss0), *rss_points])
    out["rssSlopeKbPerMessage"] = None if s is None else round(s * 1024, 3)
    for uri, _ in files:
        srv.close(uri)
    return out


async def changes(srv: Server, n: int, warmup: int) -> dict:
    """Typing a line and deleting it again, key by key, at the end of a small file."""
    uri = "file:///soak/typing.py"
    lines = ["import sys", "", "def main(argv):", "    total = 0", ""]
    srv.open(uri, "\n".join(lines))
    typed = "    total = total + int(argv[1]) * 2  # running sum"
    version, col, mismatches = 1, 0, 0
    last = len(lines) - 1

    def key() -> None:
        nonlocal version, col
        version += 1
        line = lines[last]
        if len(line) < len(typed) and (col == 0 or line == typed[:col]) and not _deleting[0]:
            srv.change(uri, version, (last, col, last, col), typed[col])
            lines[last] = line + typed[col]
            col += 1
            _deleting[0] = col == len(typed)
        else:
            srv.change(uri, version, (last, col - 1, last, col), "")
            lines[last] = line[:-1]
            col -= 1
            _deleting[0] = col > 0

    _deleting = [False]
    for i in range(warmup):
        key()
        if i % 200 == 0:
            await srv.proc.stdin.drain()
    rss0 = await srv.settled_rss()
    points, t0 = [(0, rss0)], time.perf_counter()
    for i in range(n):
        key()
        if (i + 1) % 200 == 0:
            await srv.proc.stdin.drain()
        if (i + 1) % 1000 == 0:
            doc = (await srv.status(uri))["document"]
            want = hashlib.sha256("\n".join(lines).encode()).hexdigest()
            mismatches += doc["sha256"] != want or doc["version"] != version
            points.append((i + 1, round(srv.rss(), 2)))
    seconds = time.perf_counter() - t0
    rss1 = await srv.settled_rss()
    s = slope(points)
    srv.close(uri)
    return {
        "didChange": n,
        "warmup": warmup,
        "seconds": round(seconds, 2),
        "perSecond": round(n / seconds, 1),
        "copyMismatches": mismatches,
        "rssMb": {"before": rss0, "after": rss1, "every1000": points},
        "rssKbPerMessage": round((rss1 - rss0) * 1024 / n, 3),
        "rssSlopeKbPerMessage": None if s is None else round(s * 1024, 3),
    }


def big_files() -> list[tuple[str, str, str, list[tuple[int, int]]]]:
    """(name, language, text, request positions)."""
    ten = ("def f(x):\n    return x + 1\n\n" * 400_000)[: 10 * 1024 * 1024] + "v = \n"
    ten_last = ten.count("\n") - 1
    data = ("x = [" + ", ".join(str(i % 1000) for i in range(260_000)))[: 1024 * 1024 - 2] + ", "
    js = ("var a=" + "function(b){return b+1},c=" * 40_000)[: 1024 * 1024]
    rnd = random.Random(0)
    binary = bytes(rnd.randrange(256) for _ in range(256 * 1024)).decode("latin-1")
    return [
        ("10 MB", "python", ten, [(ten_last, 4), (ten_last // 2, 0)]),
        ("1 MB one line (Python data)", "python", data, [(0, len(data)), (0, len(data) // 2)]),
        ("1 MB one line (minified JS)", "javascript", js, [(0, len(js)), (0, len(js) // 2)]),
        ("binary", "python", binary, [(0, 100)]),
        ("empty", "python", "", [(0, 0)]),
    ]


async def bigfiles(srv: Server, requests: int) -> dict:
    out = {}
    for k, (name, language, text, where) in enumerate(big_files()):
        uri = f"file:///soak/big{k}.{'js' if language == 'javascript' else 'py'}"
        rss0 = await srv.settled_rss()
        t0 = time.perf_counter()
        srv.open(uri, text, language)
        parsed = (await srv.status(uri))["document"]["parsed"]
        open_ms = (time.perf_counter() - t0) * 1000
        rss_open = round(srv.rss(), 2)
        req_ms, key_ms, model_ms, rest_ms, answered, items = [], [], [], [], 0, 0
        version = 1
        for line, char in where:
            for i in range(requests):  # each at another column: no cached answer
                col = max(0, char - 3 * i)
                before = (await srv.status())["completed"]
                _, fut = srv.inline(uri, line, col, invoked=i == requests - 1)
                msg = await asyncio.wait_for(fut, ANSWER_S)
                answered += 1
                items += len((msg.get("result") or {}).get("items", []))
                req_ms.append(answered_ms(fut))
                st = await srv.status()
                if st["completed"] == before + 1:  # the model ran once: its time, and the rest
                    model_ms.append(st["lastLatencyMs"])
                    rest_ms.append(req_ms[-1] - st["lastLatencyMs"])
            for _ in range(3):  # keystrokes: a didChange, then the request it brings
                version += 1
                t1 = time.perf_counter()
                srv.change(uri, version, (line, char, line, char), "1")
                _, fut = srv.inline(uri, line, char + 1)
                await asyncio.wait_for(fut, ANSWER_S)
                answered += 1
                key_ms.append((time.perf_counter() - t1) * 1000)
                version += 1
                srv.change(uri, version, (line, char, line, char + 1), "")
        srv.close(uri)
        rss_closed = await srv.settled_rss()
        out[name] = {
            "chars": len(text),
            "language": language,
            "parsed": parsed,
            "openMs": round(open_ms, 1),
            "requestMs": summary(req_ms),
            "modelMs": summary(model_ms),  # the model's own time (parafill/status lastLatencyMs)
            "serverMs": summary(rest_ms),  # request time less the model's: the server's part
            "keystrokeMs": summary(key_ms),  # didChange (re-parse) + request
            "answered": answered,
            "items": items,
            "rssMb": {"before": rss0, "afterOpen": rss_open, "afterClose": rss_closed},
        }
        print(
            f"  {name}: open {open_ms:.0f} ms, request {summary(req_ms)}, model "
            f"{summary(model_ms)}, server {summary(rest_ms)}, keystroke {summary(key_ms)}",
            flush=True,
        )
    return out


# ---- driver ------------------------------------------------------------------------------------
def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            or None
        )
    except OSError:
        return None


async def run_server(
    args, backend: list[str], options: dict, phases: list[str], label: str
) -> dict:
    log = Path(args.log_dir) / f"soak_server_{label}.log"
    srv = Server(backend, log)
    init_s = await srv.start({"debounceMs": 0, **options})
    st = await srv.wait_ready()
    out: dict = {
        "backend": "fake (tests/fake_infiller.py)" if backend else "shipped model",
        "settings": st["settings"],
        "initSeconds": round(init_s, 2),
        "model": st["model"],
        "device": st["device"],
        "precision": st["precision"],
        "rssAtReadyMb": await srv.settled_rss(),
        "phases": {},
    }
    for phase in phases:
        print(f"[{label}] {phase} ...", flush=True)
        t0 = time.perf_counter()
        if phase == "storm":
            r = await storm(srv, args.storm)
            if backend:  # the rest on the instant fake: the slow one's model path unset
                await srv.configure({"modelPath": None})
        elif phase == "completions":
            r = await completions(srv, args.completions, args.docs, args.seed)
        elif phase == "changes":
            r = await changes(srv, args.changes, args.warmup)
        else:
            r = await bigfiles(srv, args.big_requests)
        r["wallSeconds"] = round(time.perf_counter() - t0, 1)
        out["phases"][phase] = r
        print(f"[{label}] {phase}: {json.dumps(r)[:400]}", flush=True)
    out["shown"] = srv.shown
    out["rssSeries"] = srv.series[:: max(1, len(srv.series) // 400)]  # at most ~400 points
    out["peakRssMb"] = max((p["rssMb"] for p in srv.series), default=None)
    srv.sampler.cancel()
    out["exitCode"] = await srv.stop()
    return out


async def run(args) -> dict:
    phases = [p for p in args.phases.split(",") if p]
    traffic = [p for p in phases if p != "bigfiles"]
    runs = {}
    if traffic:
        backend = [] if args.real else FAKE
        options = {} if args.real else {"modelPath": "slow:0.02"}  # 8 steps of 20 ms a fill
        runs["traffic"] = await run_server(args, backend, options, traffic, "traffic")
    if "bigfiles" in phases:
        backend = FAKE if args.fake_bigfiles else []
        log = str(Path(args.log_dir) / "soak_bigfiles_parafill.log")  # the fill times
        options = {"logFile": log}
        runs["bigfiles"] = await run_server(args, backend, options, ["bigfiles"], "bigfiles")
    return runs


def verdict(runs: dict) -> dict:
    out = {}
    ph = runs.get("traffic", {}).get("phases", {})
    if "changes" in ph:
        c = ph["changes"]
        growth = max(c["rssKbPerMessage"], c["rssSlopeKbPerMessage"] or 0)
        out["rssKbPerMessage<1 (changes)"] = growth < TARGET_KB_PER_MESSAGE
    unanswered = sum(p.get("unanswered", 0) for p in ph.values())
    if ph:
        out["everyRequestAnswered"] = unanswered == 0
    big = runs.get("bigfiles", {}).get("phases", {}).get("bigfiles", {})
    for name, r in big.items():
        if "one line" in name:
            for q in ("p50", "p95"):
                ok = (r["requestMs"][q] or 0) < TARGET_ONE_LINE_MS
                out[f"{name}: request {q}<300ms"] = ok
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phases", default=",".join(PHASES), help=f"of {', '.join(PHASES)}")
    ap.add_argument("--storm", type=int, default=1000, help="requests in the cancel storm")
    ap.add_argument("--completions", type=int, default=5000)
    ap.add_argument("--docs", type=int, default=20, help="documents of the completions phase")
    ap.add_argument("--changes", type=int, default=20000, help="didChange counted")
    ap.add_argument("--warmup", type=int, default=2000, help="didChange before counting")
    ap.add_argument("--big-requests", type=int, default=5, help="requests per big-file position")
    ap.add_argument("--real", action="store_true", help="traffic phases on the shipped model")
    ap.add_argument("--fake-bigfiles", action="store_true", help="big files on the fake backend")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-dir", default="/tmp", help="where the servers' stderr goes")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = ap.parse_args(argv)
    t0 = time.time()
    runs = asyncio.run(run(args))
    result = {
        "command": "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0)),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "targets": {
            "rssKbPerMessage": TARGET_KB_PER_MESSAGE,
            "oneMegabyteLineMs": TARGET_ONE_LINE_MS,
        },
        "runs": runs,
    }
    result["verdict"] = verdict(runs)
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result["verdict"], indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
