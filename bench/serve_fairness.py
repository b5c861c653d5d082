"""A small request behind the heaviest legal one on the model server (issue #24): the heavy FIM
request on a CPU (`def f(x):`, 256 tokens x 4 candidates, temperature 1.5: 8 x 256 is refused,
`max_request_tokens`) is sent, and a small line
request (24 tokens, stop at the line's end) 1 s later; the small one's latency, and the heavy
one's status and time. Side by side in one sitting, each setting its own server (the app on
uvicorn in this process, the shipped model on the CPU), medians over rounds:

- `lock`: the infiller as model/infill.py builds it today (a plain `threading.Lock`: a running
  request cannot be paused, so the small one waits for the heavy one, whose time budget,
  `request_seconds`, ends it);
- `rlock`: the same server with the infiller's lock re-entrant (`threading.RLock`, the change
  asked of model/infill.py): the small one runs between the heavy one's denoising steps
  (model/serve/interleave.py).

The small request alone (nothing running) is measured too, as its own cost. With `--base DIR`
(a checkout of the code before), its `serve-model --no-ray` runs the same rounds first, with the
heaviest request legal there (8 candidates x 256 tokens) and no time budget.

    .venv/bin/python bench/serve_fairness.py --rounds 3       # about 2 minutes
Results: bench/results/serve_fairness.json
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from http_serving import serving
from serve_throughput import run_header

from model.serve.app import local_app
from model.serve.options import ServeOptions

FIM = "/v1/fim/completions"
HEAVY = {"prompt": "def f(x):\n", "max_tokens": 256, "n": 4, "temperature": 1.5}


def small(k: int) -> dict:
    return {
        "prompt": f"def g{k}(values):\n    total = 0\n    for v in values:\n        total += ",
        "suffix": "\n    return total\n",
        "max_tokens": 24,
        "stop": ["\n"],
    }


def post(url: str, body: dict, timeout: float = 300) -> tuple[int | str, float]:
    """The status (or "gave up": the client's timeout) and the seconds it took."""
    t = time.perf_counter()
    try:
        status: int | str = httpx.post(url + FIM, json=body, timeout=timeout).status_code
    except httpx.TimeoutException:
        status = "gave up"
    return status, time.perf_counter() - t


def one_round(
    url: str, k: int, delay: float, heavy_body: dict = HEAVY, patience: float = 300
) -> dict:
    """The heavy request (its client gives up after `patience` s), the small one `delay` s
    later."""
    heavy: dict = {}

    def run_heavy() -> None:
        heavy["status"], heavy["s"] = post(url, heavy_body, patience)

    thread = threading.Thread(target=run_heavy)
    thread.start()
    time.sleep(delay)
    status, took = post(url, small(k))
    thread.join()
    return {"small_status": status, "small_s": took, "heavy_status": heavy["status"],
            "heavy_s": heavy["s"]}  # fmt: skip


def before(args) -> dict:
    """The rounds against the code before (`--base`): its own server process, no time budget,
    the heaviest request legal there (it ran over 300 s here), whose client gives up after
    `--patience` s, as the issue's did."""
    from serve_throughput import Server

    heavy = {**HEAVY, "n": 8}
    server = Server(["--max-batch-size", "8"], ray=False, root=Path(args.base))
    try:
        runs = [
            one_round(server.url, 2000 + r, args.delay, heavy, args.patience)
            for r in range(args.rounds)
        ]
    finally:
        server.stop()
    for run in runs:
        print("base", run, flush=True)
    return {
        "code": args.base,
        "heavy": heavy,
        "heavy_client_gives_up_after_s": args.patience,
        "rounds": runs,
        "small_s_median": round(statistics.median(x["small_s"] for x in runs), 3),
        "heavy_s_median": round(statistics.median(x["heavy_s"] for x in runs), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds between heavy and small")
    ap.add_argument("--request-seconds", type=float, default=30.0, help="the time budget")
    ap.add_argument("--base", default=None, help="a checkout of the code before")
    ap.add_argument("--patience", type=float, default=60, help="the base's heavy client, s")
    ap.add_argument("--out", default=str(ROOT / "bench/results/serve_fairness.json"))
    args = ap.parse_args()
    from model import cpu_threads
    from model.infill import load_infiller

    infiller = load_infiller(None, "cpu", "auto")
    cpu_threads.apply(infiller, 0)
    result = run_header("python bench/serve_fairness.py " + " ".join(sys.argv[1:]))
    result["heavy"], result["small"] = HEAVY, small(0)
    result["request_seconds"] = args.request_seconds
    opts = ServeOptions(api_key_env="", request_seconds=args.request_seconds)
    rows: dict[str, list[dict]] = {"lock": [], "rlock": []}
    if args.base:
        result["base"] = before(args)
    alone = []
    shipped_lock = infiller.lock
    for r in range(args.rounds):
        for setting in ("lock", "rlock"):  # alternate, so both see the same load
            infiller.lock = shipped_lock if setting == "lock" else threading.RLock()
            with serving(local_app(opts, infiller)) as url:
                alone.append(post(url, small(1000 + r))[1])
                rows[setting].append(one_round(url, r, args.delay))
            print(setting, rows[setting][-1], flush=True)
    infiller.lock = shipped_lock
    result["small_alone_s_median"] = round(statistics.median(alone), 3)
    result["settings"] = {
        name: {
            "rounds": runs,
            "small_s_median": round(statistics.median(x["small_s"] for x in runs), 3),
            "heavy_s_median": round(statistics.median(x["heavy_s"] for x in runs), 3),
            "heavy_status": sorted({str(x["heavy_status"]) for x in runs}),
            "small_status": sorted({str(x["small_status"]) for x in runs}),
        }
        for name, runs in rows.items()
    }
    result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for name, s in result["settings"].items():
        print(
            f"{name}: small {s['small_s_median']} s, heavy {s['heavy_s_median']} s {s['heavy_status']}"
        )
    print("small alone", result["small_alone_s_median"], "s; wrote", args.out)


if __name__ == "__main__":
    main()
