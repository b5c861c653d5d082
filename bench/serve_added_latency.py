"""What the model server adds to a request at one client: the wall time of a line fill as the
language server sees it (model/backends/remote.py `RemoteInfiller.infill`: the request encoded,
sent, answered and decoded) minus the model's time on it as the server measured it (its
`parafill_model_seconds` metric, the same clock as `timing.model_ms`), median over the requests;
for each server mode in one run: Ray Serve and `--no-ray` (one uvicorn process), each in a
server process of its own, the same requests.

The requests are `bench/serve_throughput.py`'s line fills (a standard-library file each, so none
reuses another's context), one after another: back to back, or each `--pause-ms` after the
previous answer (as an editor asks while its user types: the processes on both sides go idle in
between, and on a shared machine wake slower). Besides the added time, each mode reports the
server's queued time (`timing.queued_ms`: from the handler taking the request to the model
starting on it, the batch wait included, where the client keeps it) and the round trip of
`GET /health` back to back (HTTP and, with Ray, its proxy).

`--base DIR` also measures each mode with the code in DIR, a copy of the code before a change
(`git archive COMMIT | tar -x -C DIR`): its server and its client (the measuring runs in a child
process on DIR's code), right before the same mode on this checkout, labelled `base_<mode>`.

    .venv/bin/python bench/serve_added_latency.py                   # about 1 minute
    .venv/bin/python bench/serve_added_latency.py --pause-ms 100
    .venv/bin/python bench/serve_added_latency.py --mode ray --mode "ray1=ray --batch-wait-ms 1"
    .venv/bin/python bench/serve_added_latency.py --mode ray --mode "ha=ray RAY_SERVE_ENABLE_HA_PROXY=1"
    .venv/bin/python bench/serve_added_latency.py --base /tmp/parafill-base
Results: bench/results/serve_added_latency.json (and serve_added_latency_pause100.json)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {"ray": "ray", "no_ray": "no-ray"}


def parse_mode(spec: str) -> tuple[str, bool, list[str], dict[str, str]]:
    """`LABEL=KIND [NAME=VALUE ...] [serve-model args]` or just `KIND` (ray / no-ray): (label,
    on Ray, args, the server's environment variables)."""
    label, _, rest = spec.partition("=") if "=" in spec.split(" ", 1)[0] else (spec, "", spec)
    words = shlex.split(rest)
    if not words or words[0] not in ("ray", "no-ray"):
        raise SystemExit(f"--mode wants 'LABEL=ray|no-ray [args]' or 'ray' / 'no-ray': {spec!r}")
    env = dict(w.split("=", 1) for w in words[1:] if "=" in w and w.split("=")[0].isupper())
    args = [w for w in words[1:] if w.split("=")[0] not in env]
    return label.replace("-", "_"), words[0] == "ray", args, env


def model_seconds(conn: http.client.HTTPConnection, after: float) -> tuple[float, float]:
    """(count, sum) of the server's parafill_model_seconds, once its count is past `after` (the
    server records a request's model time just after it may have answered it)."""
    for _ in range(200):
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        values = {}
        for line in text.splitlines():
            for name in ("parafill_model_seconds_count", "parafill_model_seconds_sum"):
                if line.startswith(name):
                    values[name] = float(line.rsplit(" ", 1)[1])
        count, total = values["parafill_model_seconds_count"], values["parafill_model_seconds_sum"]
        if count > after:
            return count, total
        time.sleep(0.005)
    raise RuntimeError("the server did not record the request's model time")


def measure(url: str, requests_file: str, warm: int, health: int, pause_s: float) -> dict:
    """The measuring, in a process whose `model` package is the code under test: requests one
    after another through its RemoteInfiller, each's wall and model ms."""
    from model.backends import remote
    from model.backends.remote import RemoteInfiller
    from model.interface import request_from_json

    reqs = [request_from_json(r) for r in json.loads(Path(requests_file).read_text())]
    parts = urllib.parse.urlsplit(url)
    metrics = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    client = RemoteInfiller(url, timeout_s=60)
    wall, model, queued = [], [], []
    try:
        count, total = model_seconds(metrics, -1)
        for k, req in enumerate(reqs):
            time.sleep(pause_s)
            t = time.perf_counter()
            client.infill(req)
            spent = (time.perf_counter() - t) * 1e3
            count, after = model_seconds(metrics, count)
            if k >= warm:
                wall.append(spent)
                model.append((after - total) * 1e3)
                timing = getattr(client, "last_timing", None)  # not in older clients
                if timing and "queued_ms" in timing:
                    queued.append(timing["queued_ms"])
            total = after
        rtt = []
        for _ in range(health):
            t = time.perf_counter()
            metrics.request("GET", "/health")
            metrics.getresponse().read()
            rtt.append((time.perf_counter() - t) * 1e3)
    finally:
        client.close()
        metrics.close()
    added = sorted(w - m for w, m in zip(wall, model))
    return {
        "client_code": str(Path(remote.__file__).parents[2]),
        "requests": len(wall),
        "added_ms_p50": round(statistics.median(added), 2),
        "added_ms_p95": round(added[round(0.95 * (len(added) - 1))], 2),
        "added_ms_mean": round(statistics.mean(added), 2),
        "queued_ms_p50": round(statistics.median(queued), 2) if queued else None,
        "health_round_trip_ms_p50": round(statistics.median(rtt), 2) if rtt else None,
        "wall_ms_p50": round(statistics.median(wall), 2),
        "model_ms_p50": round(statistics.median(model), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--mode",
        action="append",
        help="a server to measure: 'ray', 'no-ray', or 'LABEL=ray|no-ray [serve-model args]' "
        "(repeat; default: ray and no-ray)",
    )
    ap.add_argument("--requests", type=int, default=40, help="measured requests per mode")
    ap.add_argument("--warm", type=int, default=4, help="requests before measuring")
    ap.add_argument("--pause-ms", type=float, default=0, help="between an answer and the next")
    ap.add_argument("--health", type=int, default=40, help="GET /health round trips per mode")
    ap.add_argument("--threads", type=int, default=0, help="the server's --threads (0: auto)")
    ap.add_argument("--base", help="also measure each mode with this copy of older code")
    ap.add_argument("--out", default=str(ROOT / "bench/results/serve_added_latency.json"))
    ap.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)  # the child's part
    ap.add_argument("--requests-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # the child: `model` is imported from its PYTHONPATH, the code under test
        row = measure(args.measure, args.requests_file, args.warm, args.health, args.pause_ms / 1e3)
        print(json.dumps(row))
        return

    sys.path.insert(0, str(ROOT))
    from serve_throughput import Server, line_requests, run_header

    from model.interface import request_to_json

    base = Path(args.base).resolve() if args.base else None
    modes = []  # (label, on Ray, serve-model args, environment, the code's root)
    for label, ray, extra, env in map(parse_mode, args.mode or MODES.values()):
        if base is not None:
            modes.append((f"base_{label}", ray, extra, env, base))
        modes.append((label, ray, extra, env, ROOT))
    reqs = [request_to_json(r) for r in line_requests(args.requests + args.warm)]
    requests_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
    json.dump(reqs, requests_file)
    requests_file.close()
    result = run_header("python bench/serve_added_latency.py " + shlex.join(sys.argv[1:]))
    result |= {"pause_ms": args.pause_ms, "modes": {}}
    if base is not None:
        result["base"] = str(base)
    try:
        for label, ray, extra, env, root in modes:
            server = Server(["--threads", str(args.threads), *extra], ray, root=root, env=env)
            child = [sys.executable, __file__, "--measure", server.url]
            child += ["--requests-file", requests_file.name, "--warm", str(args.warm)]
            child += ["--health", str(args.health), "--pause-ms", str(args.pause_ms)]
            try:
                done = subprocess.run(
                    child,
                    env={**os.environ, "PYTHONPATH": str(root)},
                    capture_output=True,
                    text=True,
                    check=False,
                )
            finally:
                server.stop()
            if done.returncode != 0:
                raise RuntimeError(f"measuring {label} failed:\n{done.stderr[-3000:]}")
            row = {"server_command": " ".join(server.cmd[2:]), "env": env, "code": str(root)}
            row.update(json.loads(done.stdout.splitlines()[-1]))
            result["modes"][label] = row
            print(label, row, flush=True)
    finally:
        os.unlink(requests_file.name)
    result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
