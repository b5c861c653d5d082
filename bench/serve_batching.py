"""The model server's batching against its requests one at a time (issue #22 item 7): 16 short
FIM requests (`def fN(values): ... total += `, max_tokens 24) sent one after another, then the
same 16 sent at once, by a server per setting (`--max-batch-size`, the server's own choice
`auto`, or the code before: `base:N` with `--base DIR`), side by side in one sitting: every
server is up at once, each round visits them in turn (sequential, then at once), and each
setting's figures are medians over its rounds. The ratio is sequential / at-once wall
time (above 1: the batch pays). Server-side figures from its Prometheus metrics: mean batch size
and the model's seconds per request.

    .venv/bin/python bench/serve_batching.py                        # --no-ray, about 2 minutes
    .venv/bin/python bench/serve_batching.py --ray --settings 8,1,auto
    .venv/bin/python bench/serve_batching.py --base /tmp/before --settings base:8,base:1,auto
Results: bench/results/serve_batching.json (or --out)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from serve_throughput import Server, run_header

REQUESTS = 16


def bodies(tag: str) -> list[dict]:
    """The issue's 16 short FIM requests (a tag makes each round's contexts its own)."""
    return [
        {
            "prompt": f"def f{tag}{i}(values):\n    total = 0\n    for v in values:\n        total += ",
            "suffix": "\n    return total\n",
            "max_tokens": 24,
        }
        for i in range(REQUESTS)
    ]


def sequential(url: str, batch: list[dict]) -> float:
    t = time.perf_counter()
    with httpx.Client(timeout=120) as http:
        for body in batch:
            http.post(url + "/v1/fim/completions", json=body).raise_for_status()
    return time.perf_counter() - t


def at_once(url: str, batch: list[dict]) -> float:
    """Every request on a thread (and connection) of its own, released together."""
    go = threading.Barrier(len(batch) + 1)
    codes: list[int] = []

    def one(body: dict) -> None:
        with httpx.Client(timeout=120) as http:
            go.wait()
            codes.append(http.post(url + "/v1/fim/completions", json=body).status_code)

    threads = [threading.Thread(target=one, args=(b,)) for b in batch]
    for th in threads:
        th.start()
    go.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    if codes != [200] * len(batch):
        raise RuntimeError(f"answers {codes}")
    return time.perf_counter() - t


def model_seconds(server: Server) -> tuple[float, float, float, float]:
    return (
        server.metric("parafill_model_seconds_sum"),
        server.metric("parafill_model_seconds_count"),
        server.metric("parafill_batch_size_sum"),
        server.metric("parafill_batch_size_count"),
    )


def start(setting: str, ray: bool, extra: list[str], base: str | None) -> Server:
    """`setting`: a --max-batch-size, "auto" (the server's default), or "base:N": the base
    checkout's server (`--base`, the code before) with --max-batch-size N."""
    root, size = ROOT, setting
    if setting.startswith("base:"):
        if base is None:
            raise SystemExit("a base: setting needs --base DIR")
        root, size = Path(base), setting.split(":", 1)[1]
    args = [] if size == "auto" else ["--max-batch-size", size]
    server = Server(args + extra, ray, root=root)
    server.code = str(root)  # type: ignore[attr-defined]
    sequential(server.url, bodies(f"w{setting}_"))
    return server


def one_round(server: Server, tag: str) -> dict:
    seq = sequential(server.url, bodies(f"s{tag}_"))
    m0 = model_seconds(server)
    par = at_once(server.url, bodies(f"p{tag}_"))
    m1 = model_seconds(server)
    return {
        "sequential_s": seq,
        "at_once_s": par,
        "batch_size": (m1[2] - m0[2]) / max(1.0, m1[3] - m0[3]),
        "model_ms": (m1[0] - m0[0]) / max(1.0, m1[1] - m0[1]) * 1e3,
    }


def summary(setting: str, server: Server, runs: list[dict]) -> dict:
    seq = [r["sequential_s"] for r in runs]
    par = [r["at_once_s"] for r in runs]
    health = httpx.get(server.url + "/health", timeout=10).json()
    return {
        "setting": setting,
        "code": server.code,  # type: ignore[attr-defined]
        "batching": health.get("batching"),
        "server_command": " ".join(server.cmd[2:]),
        "sequential_s": [round(x, 3) for x in seq],
        "at_once_s": [round(x, 3) for x in par],
        "sequential_median_s": round(statistics.median(seq), 3),
        "at_once_median_s": round(statistics.median(par), 3),
        "ratio_sequential_over_at_once": round(statistics.median(seq) / statistics.median(par), 2),
        "at_once_mean_batch_size": round(statistics.median(r["batch_size"] for r in runs), 2),
        "at_once_model_ms_per_request": round(statistics.median(r["model_ms"] for r in runs), 1),
    }


def run_all(settings: list[str], ray: bool, rounds: int, extra: list[str], base) -> list[dict]:
    """Every setting's server up at once; each round visits them in turn (the same load)."""
    servers: dict[str, Server] = {}
    try:
        for setting in settings:
            servers[setting] = start(setting, ray, extra, base)
        runs: dict[str, list[dict]] = {s: [] for s in settings}
        for r in range(rounds):
            for setting, server in servers.items():
                runs[setting].append(one_round(server, f"{setting.replace(':', '')}_{r}"))
                last = runs[setting][-1]
                print(setting, f"round {r}: sequential {last['sequential_s']:.2f} s, "
                      f"at once {last['at_once_s']:.2f} s", flush=True)  # fmt: skip
        return [summary(s, servers[s], runs[s]) for s in settings]
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="8,1,auto", help="--max-batch-size values, or auto")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ray", action="store_true", help="on Ray Serve (default: --no-ray)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--base", default=None, help="a checkout of the code before (base:N rows)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/serve_batching.json"))
    args = ap.parse_args()
    extra = ["--device", args.device] if args.device else []
    result = run_header("python bench/serve_batching.py " + " ".join(sys.argv[1:]))
    result["ray"] = args.ray
    result["rows"] = run_all(args.settings.split(","), args.ray, args.rounds, extra, args.base)
    result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for row in result["rows"]:
        print(
            f"{row['setting']:>5}: sequential {row['sequential_median_s']} s, at once "
            f"{row['at_once_median_s']} s, ratio {row['ratio_sequential_over_at_once']}"
        )
    print("wrote", args.out)


if __name__ == "__main__":
    main()
