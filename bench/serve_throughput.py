"""Throughput of the model server (`parafill serve-model`, model/serve/) with the shipped model:
requests/s and latency p50/p95 of `POST /v1/infill` for 1, 4 and 8 concurrent clients, the
batched denoising loop (`--max-batch-size 8`: requests that wait together are denoised together,
`BuiltinInfiller.infill_batch`) against one by one (`--max-batch-size 1`: the single-request
path), each in a server process of its own, on Ray Serve (or `--no-ray`).

The requests are line completions cut from real code as the editor asks for them: a code line of
a standard-library file (a different file for each request, so no request reuses another's
context encoding), its prefix and suffix trimmed by whole lines to about 1,050 and 350 characters
(the server's 400-token context), the hole at the line's indentation or after the first ` = ` /
`(` of the line (mid-line, where the length signal applies), 24 tokens flagged single-line with
the line's stop rule. Every client sends its share back to back; each level gets requests no
earlier level used. Client-side latency (HTTP and, with Ray, its proxy included); the mean batch
size from the server's Prometheus metrics.

The `model` section is the loop alone, in this process: B requests one after another with
`infill` against the same B with `infill_batch`, the answers compared.

    .venv/bin/python bench/serve_throughput.py              # about 5 minutes on the 2-core machine
    .venv/bin/python bench/serve_throughput.py --no-ray --clients 1,4 --per-client 3
Results: bench/results/serve_throughput.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.interface import Hole, InfillRequest, StopRules, request_to_json

PREFIX_CHARS, SUFFIX_CHARS = 1050, 350
LINE_BUDGET = 24


def line_requests(n: int, skip: int = 0) -> list[InfillRequest]:
    """`n` line requests, one per standard-library file (sorted, from the `skip`-th on)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in stdlib.rglob("*.py")
        if p.stat().st_size > 8000 and not {"site-packages", "test", "tests"} & set(p.parts)
    )
    out: list[InfillRequest] = []
    for k, path in enumerate(files[skip:]):
        if len(out) == n:
            break
        lines = path.read_text(errors="replace").splitlines(True)
        i = len(lines) // 2
        while i < len(lines) - 1 and not (
            lines[i].startswith("    ") and lines[i].strip()[:1].isalpha() and len(lines[i]) > 20
        ):
            i += 1
        if i >= len(lines) - 1:
            continue
        line = lines[i]
        indent = line[: len(line) - len(line.lstrip())]
        cut = len(indent)
        if (skip + k) % 2:  # mid-line: after the line's first " = " or "("
            for mark in (" = ", "("):
                if mark in line.rstrip("\n"):
                    cut = line.index(mark) + len(mark)
                    break
        prefix = "".join(lines[:i])[-PREFIX_CHARS:]
        prefix = prefix[prefix.find("\n") + 1 :] + line[:cut]
        suffix = "\n" + "".join(lines[i + 1 :])
        suffix = suffix[: suffix.rfind("\n", 0, SUFFIX_CHARS) + 1]
        hole = Hole(LINE_BUDGET, single_line=True, stop=StopRules(single_line=True))
        out.append(InfillRequest([prefix, hole, suffix], language="python"))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`parafill serve-model` in its own process group, stopped with SIGINT; `root` is the
    checkout whose code it runs (this one by default), `env` what its environment adds."""

    def __init__(
        self,
        args: list[str],
        ray: bool,
        timeout: float = 300,
        root: Path = ROOT,
        env: dict[str, str] | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-throughput-", suffix=".log")  # noqa: SIM115
        cmd = [sys.executable, "-m", "lsp_server.cli", "serve-model", "--port", str(self.port)]
        cmd += ["--num-cpus", str(os.cpu_count() or 2)] if ray else ["--no-ray"]
        self.cmd = cmd + args
        env = {**os.environ, "PARAFILL_API_KEY": "", "PYTHONPATH": str(root), **(env or {})}
        self.proc = subprocess.Popen(
            self.cmd, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve-model exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"serve-model did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name)] in " {"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def drive(url: str, bodies: list[dict], clients: int) -> tuple[list[float], list[dict], float]:
    """`clients` threads sending `bodies` back to back (each takes the next one left): per
    request latency (s) and answer, in the bodies' order, and the wall time of the whole."""
    latency: list[float] = [0.0] * len(bodies)
    answers: list[dict] = [{}] * len(bodies)
    lock = threading.Lock()
    todo = iter(range(len(bodies)))

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    k = next(todo, None)
                if k is None:
                    return
                t = time.perf_counter()
                r = http.post(url + "/v1/infill", json=bodies[k])
                latency[k] = time.perf_counter() - t
                answers[k] = r.json() if r.status_code == 200 else {"status": r.status_code}

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latency, answers, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def serve_section(args, levels: list[int], batches: dict[str, int]) -> dict:
    """Each mode in a server of its own; each level its own requests (the same in every mode)."""
    per_level, skip = {}, 0
    for c in levels:
        per_level[c] = [request_to_json(r) for r in line_requests(c * args.per_client, skip)]
        skip += c * args.per_client + 4
    warm = [request_to_json(r) for r in line_requests(3, skip)]
    out: dict = {"modes": {}}
    fills: dict[str, dict[int, list]] = {}
    for mode, size in batches.items():
        server = Server(
            ["--max-batch-size", str(size), "--threads", str(args.threads)], not args.no_ray
        )
        out["server_command"] = " ".join(server.cmd[2:])
        try:
            drive(server.url, warm, 1)
            rows, fills[mode] = [], {}
            for c in levels:
                n0, s0 = (
                    server.metric("parafill_batch_size_count"),
                    server.metric("parafill_batch_size_sum"),
                )
                lat, answers, wall = drive(server.url, per_level[c], c)
                n1, s1 = (
                    server.metric("parafill_batch_size_count"),
                    server.metric("parafill_batch_size_sum"),
                )
                ok = [a for a in answers if "results" in a]
                fills[mode][c] = [a.get("results", [{}])[0].get("fills") for a in answers]
                model_ms = [a["timing"]["model_ms"] for a in ok]
                rows.append(
                    {
                        "clients": c,
                        "requests": len(lat),
                        "errors": len(lat) - len(ok),
                        "requests_per_s": round(len(lat) / wall, 2),
                        "latency_p50_ms": round(pct(lat, 0.5) * 1e3, 1),
                        "latency_p95_ms": round(pct(lat, 0.95) * 1e3, 1),
                        "latency_mean_ms": round(statistics.mean(lat) * 1e3, 1),
                        "model_ms_p50": round(pct(model_ms, 0.5), 1) if model_ms else None,
                        "mean_batch_size": round((s1 - s0) / max(1.0, n1 - n0), 2),
                        "wall_s": round(wall, 2),
                    }
                )
                print(mode, rows[-1], flush=True)
            out["modes"][mode] = {"max_batch_size": size, "levels": rows}
        finally:
            server.stop()
    if len(fills) == 2:
        a, b = fills.values()
        same = sum(x == y for c in levels for x, y in zip(a[c], b[c]))
        out["same_fills_batched_vs_one_by_one"] = f"{same} of {sum(len(a[c]) for c in levels)}"
        rows_b, rows_1 = (out["modes"][m]["levels"] for m in batches)
        out["speedup_requests_per_s"] = {
            str(x["clients"]): round(x["requests_per_s"] / y["requests_per_s"], 2)
            for x, y in zip(rows_b, rows_1)
        }
    return out


def model_section(args, sizes: list[int]) -> dict:
    """The loop alone: B requests one after another (`infill`) against together (`infill_batch`)."""
    from model import cpu_threads
    from model.infill import BuiltinInfiller

    inf = BuiltinInfiller(None, args.device, args.precision, reuse_context=False)
    cpu_threads.apply(inf, args.threads)
    reqs = line_requests(max(sizes) * args.model_groups + 2, skip=200)
    inf.infill(reqs[-1])  # warm up
    inf.infill_batch(reqs[-2:])
    rows = []
    for b in sizes:
        alone_s, batch_s, same, total = 0.0, 0.0, 0, 0
        parts = {"alone": [0.0, 0.0], "batched": [0.0, 0.0]}  # context ms, denoise ms
        for g in range(args.model_groups):
            group = reqs[g * b : (g + 1) * b]
            alone = []
            for r in group:
                t = time.perf_counter()
                alone.append(inf.infill(r))
                alone_s += time.perf_counter() - t
                parts["alone"][0] += inf.last_timing["context_ms"]
                parts["alone"][1] += inf.last_timing["denoise_ms"]
            t = time.perf_counter()
            together = inf.infill_batch(group)
            batch_s += time.perf_counter() - t
            parts["batched"][0] += inf.last_timing["context_ms"]
            parts["batched"][1] += inf.last_timing["denoise_ms"]
            same += sum(
                [(r.fills, r.ended_by, r.steps_used) for r in x]
                == [(r.fills, r.ended_by, r.steps_used) for r in y]
                for x, y in zip(alone, together)
            )
            total += b
        rows.append(
            {
                "batch": b,
                "requests": total,
                "one_by_one_ms_per_request": round(alone_s / total * 1e3, 1),
                "batched_ms_per_request": round(batch_s / total * 1e3, 1),
                "speedup": round(alone_s / batch_s, 2),
                "context_ms_per_request": {k: round(v[0] / total, 1) for k, v in parts.items()},
                "denoise_ms_per_request": {k: round(v[1] / total, 1) for k, v in parts.items()},
                "same_answers": f"{same} of {total}",
            }
        )
        print("model", rows[-1], flush=True)
    return {"precision": inf.precision, "threads": args.threads, "rows": rows}


def run_header(command: str) -> dict:
    """What a result file starts with: the command, the machine and its load, when, the commit."""
    return {
        "command": command,
        "machine": {"cpus": os.cpu_count(), "loadavg_start": Path("/proc/loadavg").read_text()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,4,8", help="concurrent clients, comma-separated")
    ap.add_argument("--per-client", type=int, default=6, help="requests per client per level")
    ap.add_argument("--max-batch-size", type=int, default=8, help="of the batched server")
    ap.add_argument("--threads", type=int, default=0, help="the server's --threads (0: auto)")
    ap.add_argument("--no-ray", action="store_true", help="serve-model --no-ray (one process)")
    ap.add_argument("--model-sizes", default="1,4,8", help="batch sizes of the in-process part")
    ap.add_argument("--model-groups", type=int, default=3, help="groups per in-process size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench/results/serve_throughput.json"))
    args = ap.parse_args()
    levels = [int(x) for x in args.clients.split(",")]
    result = run_header("python bench/serve_throughput.py " + " ".join(sys.argv[1:]))
    if not args.skip_serve:
        modes = {"batched": args.max_batch_size, "one_by_one": 1}
        result["serve"] = {"ray": not args.no_ray, **serve_section(args, levels, modes)}
    if not args.skip_model:
        result["model"] = model_section(args, [int(x) for x in args.model_sizes.split(",")])
    result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
