"""The model server (`parafill serve-model`, model/serve/) as a real process on Ray Serve (a local
Ray instance that the server process starts and shuts down), answered by a real HTTP client
(httpx); and the language server with `backend: remote` against it (pytest-lsp).

The shipped model: FIM and native answers equal to the same requests run in this process, a batch
of concurrent requests equal to their one-by-one answers, the canvas streamed step by step. The
fake backend (tests/fake_infiller.py, 0.1 s a step) where the model is not the point: auth, the
shapes, bad input answered and survived, 429 past the queue, a client that goes away cancels the
work; the language server's ghost text from the remote, $/cancelRequest closing the HTTP request,
and a server that is down: a message and the built-in fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import pytest_lsp
from http_serving import serving
from lsp_helpers import (
    ROOT,
    as_dict,
    cursor_of,
    fake_server_command,
    inline_params,
    open_doc,
    server_env,
)
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from model.infill import MASK_GLYPH
from model.interface import (
    Hole,
    InfillCancelled,
    InfillRequest,
    InfillResult,
    StopRules,
    never,
    request_to_json,
)

TOKEN_ENV, TOKEN = "PARAFILL_TEST_TOKEN", "test-token-4f9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEP_S = 0.1  # the fake backend's time per step (8 steps a request)
MAX_QUEUE = 3
START_TIMEOUT_S = 240
lsp = pytest.mark.asyncio(loop_scope="module")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ModelServer:
    """`parafill serve-model` in its own process (and session), stopped with SIGINT."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-model-", suffix=".log")  # noqa: SIM115 - closed by stop()
        cmd = [sys.executable, "-m", "lsp_server.cli", "serve-model", "--port", str(self.port)]
        cmd += ["--num-cpus", "2", *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**server_env(), **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve-model exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"serve-model did not answer within {START_TIMEOUT_S} s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # serve.shutdown(), ray.shutdown()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", headers=AUTH, timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total


def post(url: str, path: str, body, headers=AUTH, timeout: float = 60) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers, timeout=timeout)


def sse_events(text: str) -> list:
    lines = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert lines and lines[-1] == "[DONE]", text[-300:]
    return [json.loads(line) for line in lines[:-1]]


# ---- the shipped model ----------------------------------------------------------------------
SNIPPETS = [
    ("def add(a, b):\n    return ", "\n\n\nprint(add(1, 2))\n"),
    ("import os\n\nfor name in os.listdir('.'):\n    ", "\n"),
    ("class Point:\n    def __init__(self, x, y):\n        self.x = x\n        ", "\n"),
    ("numbers = [1, 2, 3]\ntotal = ", "\nprint(total)\n"),
]


def line_request(prefix: str, suffix: str) -> InfillRequest:
    return InfillRequest([prefix, Hole(16, single_line=True), suffix])


def two_hole_request() -> InfillRequest:
    rules = StopRules(single_line=True)
    return InfillRequest(
        [
            "def area(w, h):\n    return ",
            Hole(12, single_line=True, stop=rules),
            "\n\n\ndef perimeter(w, h):\n    return ",
            Hole(12, single_line=True, stop=rules),
            "\n",
        ],
        language="python",
    )


@pytest.fixture(scope="class")  # torn down after the class: one Ray instance at a time
def shipped_server():
    srv = ModelServer("--threads", "1", "--device", "cpu", env={"PARAFILL_API_KEY": ""})
    yield srv
    srv.stop()


@pytest.fixture(scope="class")
def local():
    from model import cpu_threads
    from model.infill import load_infiller

    infiller = load_infiller(None, "cpu", "auto")
    cpu_threads.apply(infiller, 1)  # as the server's --threads 1
    return infiller


class TestShippedModel:
    """One replica of the shipped model on Ray Serve against the same model in this process."""

    def test_fim_equals_in_process(self, shipped_server, local):
        for prefix, suffix in SNIPPETS:
            body = {"prompt": prefix, "suffix": suffix, "max_tokens": 16, "stop": ["\n"]}
            r = post(shipped_server.url, "/v1/fim/completions", {"model": "parafill", **body}, {})
            assert r.status_code == 200, r.text
            data = r.json()
            want = local.infill(line_request(prefix, suffix))[0]
            assert data["object"] == "text_completion" and data["model"] == "parafill"
            (choice,) = data["choices"]
            assert choice["text"] == want.fills[0].split("\n")[0]
            assert choice["finish_reason"] in ("stop", "length")
            assert data["usage"]["completion_tokens"] == want.tokens
            assert data["usage"]["total_tokens"] > data["usage"]["prompt_tokens"] > 0

    def test_native_equals_in_process(self, shipped_server, local):
        req = two_hole_request()
        r = post(shipped_server.url, "/v1/infill", request_to_json(req), {})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        want = local.infill(req)
        assert [g["fills"] for g in got] == [w.fills for w in want]
        assert [g["ended_by"] for g in got] == [w.ended_by for w in want]
        assert len(got[0]["fills"]) == 2

    def test_concurrent_batch_equals_one_by_one(self, shipped_server):
        bodies = [request_to_json(line_request(p, s)) for p, s in SNIPPETS]
        bodies.append(request_to_json(two_hole_request()))
        one_by_one = [
            post(shipped_server.url, "/v1/infill", b, {}).json()["results"] for b in bodies
        ]
        with ThreadPoolExecutor(len(bodies)) as pool:
            together = list(
                pool.map(lambda b: post(shipped_server.url, "/v1/infill", b, {}), bodies)
            )
        assert all(r.status_code == 200 for r in together)
        assert [[x["fills"] for x in r.json()["results"]] for r in together] == [
            [x["fills"] for x in results] for results in one_by_one
        ]
        assert shipped_server.metric("parafill_batch_size_count") >= 1
        # the batch size the replica chose by measuring it at start (model/serve/calibrate.py)
        chosen = httpx.get(shipped_server.url + "/health").json()["batching"]
        assert chosen["measured"] and 1 <= chosen["max_batch_size"] <= 8
        batches = shipped_server.metric("parafill_batch_size_count")
        requests = shipped_server.metric("parafill_batch_size_sum")
        if chosen["max_batch_size"] > 1:  # some went through the batched loop together
            assert requests > batches
        else:  # batching was slower here: every batch holds one request
            assert requests == batches

    def test_native_stream_sends_the_canvas_of_each_step(self, shipped_server):
        req = two_hole_request()
        plain = post(shipped_server.url, "/v1/infill", request_to_json(req), {}).json()
        r = post(shipped_server.url, "/v1/infill", {**request_to_json(req), "stream": True}, {})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.text)
        steps, final = events[:-1], events[-1]
        assert [e["step"] for e in steps] == list(range(1, len(steps) + 1))
        assert len(steps) == final["results"][0]["steps_used"] >= 1
        assert all(len(e["canvas"][0]) == 2 for e in steps)  # both holes, each step
        assert all(e["live"] for e in steps)  # sent as each step happened
        assert final["results"][0]["fills"] == plain["results"][0]["fills"]
        assert final["results"][0]["trajectory"] is None  # not asked for in the results


# ---- live steps: each canvas is sent as its step happens --------------------------------------
class SteppingFake:
    """A backend that takes `on_step` (as the built-in model does): 4 steps of STEP_S each."""

    name, device, steps = "stepping-fake", "cpu", 4

    def count_tokens(self, text: str) -> int:
        return 1

    def infill(self, req, should_stop=never, late=None, on_step=None):
        for k in range(1, self.steps + 1):
            if should_stop():
                raise InfillCancelled()
            time.sleep(STEP_S)
            if on_step is not None:
                on_step(k, [["x" * k + MASK_GLYPH * (self.steps - k)]])
        return [InfillResult(["x" * self.steps], -0.1, self.steps, None, self.steps, ["pad"])]


def in_process_server(infiller):
    """The model server's app (model/serve/app.py, no Ray) on uvicorn in a thread."""
    from model.serve.app import local_app
    from model.serve.options import ServeOptions

    return serving(local_app(ServeOptions(api_key_env=""), infiller))


def test_native_stream_sends_each_step_as_it_happens():
    body = request_to_json(InfillRequest(["x = ", Hole(8), "\n"]))
    arrived: list[tuple[float, dict]] = []
    with in_process_server(SteppingFake()) as url:
        t0 = time.perf_counter()
        with httpx.stream("POST", url + "/v1/infill", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    arrived.append((time.perf_counter() - t0, json.loads(line[len("data: ") :])))
    steps = [(t, e) for t, e in arrived if e["object"] == "infill.step"]
    (t_end, answer) = arrived[-1]
    assert [e["step"] for _, e in steps] == [1, 2, 3, 4] and all(e["live"] for _, e in steps)
    assert steps[0][1]["canvas"] == [["x" + MASK_GLYPH * 3]]
    assert answer["object"] == "infill" and answer["results"][0]["fills"] == ["xxxx"]
    # each step arrived about when it was made, not all at the end: the first one 3 steps early
    assert t_end - steps[0][0] >= 2.5 * STEP_S, arrived
    assert all(b - a >= 0.5 * STEP_S for (a, _), (b, _) in itertools.pairwise(steps)), arrived


# ---- the fake backend: the HTTP surface -----------------------------------------------------
@pytest.fixture(scope="module")
def fake_server():
    srv = ModelServer(
        "--backend",
        "fake_infiller:load",
        "--model",
        f"slow:{STEP_S}",
        "--api-key-env",
        TOKEN_ENV,
        "--max-queue",
        str(MAX_QUEUE),
        "--max-body-bytes",
        "65536",
        "--max-holes",
        "4",
        env={TOKEN_ENV: TOKEN},
    )
    yield srv
    srv.stop()


def test_binding_off_loopback_needs_a_token():
    env = {k: v for k, v in server_env().items() if k != "PARAFILL_API_KEY"}
    cmd = [sys.executable, "-m", "lsp_server.cli", "serve-model", "--host", "0.0.0.0"]
    done = subprocess.run(
        cmd, env=env, check=False, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 2
    assert "needs a token" in done.stderr and "PARAFILL_API_KEY" in done.stderr


@pytest.mark.parametrize("ray", [True, False])
def test_a_named_token_variable_that_is_unset_refuses_to_start(ray):
    env = {k: v for k, v in server_env().items() if k != "PARAFILL_UNSET_TOKEN"}
    cmd = [sys.executable, "-m", "lsp_server.cli", "serve-model", "--port", str(free_port())]
    cmd += ["--backend", "fake_infiller:load", "--api-key-env", "PARAFILL_UNSET_TOKEN"]
    cmd += [] if ray else ["--no-ray"]
    done = subprocess.run(
        cmd, env=env, check=False, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "PARAFILL_UNSET_TOKEN" in done.stderr and "not set" in done.stderr


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_and_its_ray_instance(sig):
    """SIGTERM as SIGINT: exit 0, and every process the server started (Ray's raylet, GCS,
    agents, workers) is gone. Ray's own SIGTERM handler aborted it (exit by signal 6)."""
    srv = ModelServer("--backend", "fake_infiller:load", env={"PARAFILL_API_KEY": ""})
    family = _descendants(srv.proc.pid)
    assert len(family) > 3  # Ray's processes
    srv.proc.send_signal(sig)
    try:
        code = srv.proc.wait(90)
    finally:
        srv.stop()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_running(p) for p in family):
        time.sleep(0.5)
    left = [p for p in family if _running(p)]
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert code == 0 and not left, (code, left)


def test_no_ray_serves_the_same_app():
    """`--no-ray`: the same application in one process (uvicorn), no Ray instance."""
    srv = ModelServer("--no-ray", "--backend", "fake_infiller:load", env={"PARAFILL_API_KEY": ""})
    try:
        r = post(srv.url, "/v1/fim/completions", {"prompt": "# expect: solo\n", "n": 2}, {})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "solo"
        assert srv.metric("parafill_batch_size_count") >= 1
    finally:
        srv.stop()


def test_auth(fake_server):
    url = fake_server.url
    assert httpx.get(url + "/health").json()["status"] == "ok"  # open, for probes
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.get(url + "/v1/models", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in r.json()["error"]["message"]
        assert post(url, "/v1/fim/completions", {"prompt": "x"}, headers).status_code == 401
    models = httpx.get(url + "/v1/models", headers=AUTH).json()
    assert models["data"][0]["id"] == "parafill"


def test_fim_completions(fake_server):
    body = {"prompt": "x = 1  # expect: foo;bar\n", "suffix": "y = 2\n", "max_tokens": 8}
    r = post(fake_server.url, "/v1/fim/completions", {**body, "n": 2, "temperature": 0.5})
    assert r.status_code == 200, r.text
    data = r.json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["choices"][0] == {
        "index": 0,
        "text": "foo;bar",
        "finish_reason": "stop",
        "logprobs": None,
    }
    assert data["id"].startswith("cmpl-") and set(data["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    }
    cut = post(fake_server.url, "/v1/fim/completions", {**body, "stop": [";"]}).json()
    assert cut["choices"][0]["text"] == "foo" and cut["choices"][0]["finish_reason"] == "stop"


def test_fim_stream(fake_server):
    body = {"prompt": "x = 1  # expect: foo\n", "stream": True, "top_p": 0.9}
    body["stream_options"] = {"include_usage": True}
    r = post(fake_server.url, "/v1/fim/completions", body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert all(e["object"] == "text_completion" for e in events)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "foo"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] > 0


def test_native_infill_several_holes_and_stream(fake_server):
    rules = StopRules(single_line=True, max_lines=1)
    req = InfillRequest(
        ["a  # expect: A\nb  # expect: B\n", Hole(8, stop=rules), "\n", Hole(8), "\n"],
        schedule="threshold",
        candidates=2,
        deadline=time.time() + 60,
    )
    r = post(fake_server.url, "/v1/infill", request_to_json(req))
    assert r.status_code == 200, r.text
    data = r.json()
    assert [x["fills"] for x in data["results"]] == [["A", "B"], ["A  # alt 1", "B  # alt 1"]]
    assert data["results"][0]["ended_by"] == ["pad", "pad"]
    assert data["results"][0]["steps_used"] == 8 and data["timing"]["model_ms"] > 0
    r = post(fake_server.url, "/v1/infill", {**request_to_json(req), "stream": True})
    events = sse_events(r.text)
    steps = [e for e in events if e["object"] == "infill.step"]
    assert len(steps) == 8 and steps[-1]["canvas"][0] == ["A", "B"]
    assert events[-1]["object"] == "infill" and events[-1]["results"] == data["results"]


@pytest.mark.parametrize(
    ("path", "content", "status", "says"),
    [
        ("/v1/infill", b"{not json", 400, "not valid JSON"),
        ("/v1/fim/completions", b"\xff\xfe", 400, "not valid JSON"),
        ("/v1/infill", b"[1, 2]", 422, "JSON object"),
        ("/v1/infill", b'{"segments": ["no hole"]}', 422, "no hole"),
        ("/v1/infill", b'{"segments": ["a", {"hole": {"max_tokens": 8}}], "x": 1}', 422, "['x']"),
        ("/v1/infill", b'{"segments": ["a", {"hole": {"max_tokens": 9999}}]}', 422, "max_tokens"),
        ("/v1/infill", b'{"segments": ["a", {"hole": {"nope": 1}}]}', 422, "bad hole"),
        (
            "/v1/infill",
            json.dumps({"segments": ["a", *[{"hole": {"max_tokens": 4}}] * 5]}).encode(),
            422,
            "at most 4",
        ),
        ("/v1/fim/completions", b'{"suffix": "x"}', 422, "prompt"),
        ("/v1/fim/completions", b'{"prompt": "x", "max_tokens": "8"}', 422, "max_tokens"),
        ("/v1/fim/completions", b'{"prompt": "x", "n": 99}', 422, "n must be"),
        ("/v1/fim/completions", b'{"prompt": "x", "stop": [1]}', 422, "stop"),
        ("/v1/fim/completions", b'{"prompt": "x", "top_p": 0}', 422, "top_p"),
        ("/v1/infill", b'{"segments": ["' + b"x" * 70_000 + b'"]}', 413, "over 65536 bytes"),
    ],
)
def test_bad_requests_get_clear_errors_and_the_server_lives(
    fake_server, path, content, status, says
):
    headers = {**AUTH, "Content-Type": "application/json"}
    r = httpx.post(fake_server.url + path, content=content, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert says in error["message"] and error["code"] == status
    assert "Traceback" not in r.text
    ok = post(fake_server.url, "/v1/fim/completions", {"prompt": "# expect: ok\n"})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == "ok"


def test_429_past_the_queue(fake_server):
    body = {"prompt": "# expect: q\n"}
    with ThreadPoolExecutor(10) as pool:
        answers = list(
            pool.map(lambda _: post(fake_server.url, "/v1/fim/completions", body), range(10))
        )
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) >= MAX_QUEUE and codes.count(429) >= 10 - MAX_QUEUE - 2, codes
    busy = next(r for r in answers if r.status_code == 429)
    assert int(busy.headers["retry-after"]) >= 1
    assert busy.json()["error"]["type"] == "rate_limit_error"
    time.sleep(0.2)
    assert httpx.get(fake_server.url + "/health").json()["queue"] == 0


def test_a_client_that_goes_away_cancels_its_work(fake_server):
    body = {"segments": ["# expect: gone\n", {"hole": {"max_tokens": 8}}, ""]}
    cancelled = fake_server.metric("parafill_cancelled_total")
    runs = fake_server.metric("parafill_model_seconds_count")

    def leave(delay: float) -> None:  # a client that closes its connection after `delay`
        with contextlib.suppress(httpx.TimeoutException):
            post(fake_server.url, "/v1/infill", body, timeout=delay)

    # A runs and leaves after 2 of its 8 steps; B waits behind it and leaves before it starts
    a = threading.Thread(target=leave, args=(2.5 * STEP_S,))
    a.start()
    time.sleep(0.05)
    leave(1.5 * STEP_S)
    a.join()
    # C comes right after: it waits only for A's current step, not for A's 6 remaining ones
    c = post(fake_server.url, "/v1/infill", body)
    assert c.status_code == 200 and c.json()["results"][0]["fills"] == ["gone"]
    assert c.json()["timing"]["queued_ms"] < 4 * STEP_S * 1000, c.json()["timing"]
    for _ in range(50):
        if fake_server.metric("parafill_cancelled_total") >= cancelled + 2:
            break
        time.sleep(0.1)
    assert fake_server.metric("parafill_cancelled_total") >= cancelled + 2
    # A (stopped between steps) and C ran; B never started
    assert fake_server.metric("parafill_model_seconds_count") == runs + 2


def test_cli_complete_remote(fake_server, tmp_path):
    src = tmp_path / "a.py"
    src.write_text("# expect: 42\nx = \n")
    cmd = [sys.executable, "-m", "lsp_server.cli", "complete", f"{src}:2:5"]
    cmd += ["--remote", fake_server.url, "--api-key-env", TOKEN_ENV]
    env = {**server_env(), TOKEN_ENV: TOKEN}
    done = subprocess.run(
        cmd, env=env, check=False, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "42"
    env.pop(TOKEN_ENV)
    done = subprocess.run(
        cmd, env=env, check=False, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 2 and f"{TOKEN_ENV}, which is not set" in done.stderr


# ---- the language server with backend: remote -----------------------------------------------
CONFIG = ClientServerConfig(
    server_command=fake_server_command(), server_env={**server_env(), TOKEN_ENV: TOKEN}
)


async def _init(client: LanguageClient, options: dict) -> None:
    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            initialization_options={"parafill": {"debounceMs": 0, "prefetch": False, **options}},
        )
    )


async def status(client: LanguageClient) -> dict:
    return as_dict(await client.protocol.send_request_async("parafill/status", {}))


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def remote_client(lsp_client: LanguageClient, fake_server):
    remote = {"url": fake_server.url, "apiKeyEnv": TOKEN_ENV, "timeoutMs": 30_000}
    await _init(lsp_client, {"backend": "remote", "remote": remote})
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def down_client(lsp_client: LanguageClient):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    await _init(lsp_client, {"backend": "remote", "remote.url": url, "remote.api": "fim"})
    yield
    await lsp_client.shutdown_session()


async def inline(client: LanguageClient, uri: str, line: int, col: int):
    res = await client.text_document_inline_completion_async(inline_params(uri, line, col))
    return list(res.items) if isinstance(res, types.InlineCompletionList) else list(res or [])


@lsp
async def test_lsp_ghost_text_from_the_model_server(remote_client: LanguageClient, fake_server):
    uri = "file:///t/remote.py"
    text, line, col = cursor_of("# expect: remote_answer()\nx = |\n")
    open_doc(remote_client, uri, text)
    before = fake_server.metric("parafill_requests_total")
    items = await inline(remote_client, uri, line, col)
    assert items and items[0].insert_text == "remote_answer()"
    assert fake_server.metric("parafill_requests_total") > before  # the model server answered
    st = await status(remote_client)
    backend = st["backend"]
    assert backend["kind"] == "remote" and backend["url"] == fake_server.url
    assert backend["fallback"] is False and backend["requests"] >= 1
    assert backend["latencyMs"]["n"] >= 1 and backend["latencyMs"]["p50"] > 0
    assert st["model"].startswith("remote parafill") and TOKEN not in json.dumps(st)


@lsp
async def test_lsp_cancel_closes_the_http_request(remote_client: LanguageClient, fake_server):
    uri = "file:///t/remote_cancel.py"
    text, line, col = cursor_of("# expect: never_shown\ny = |\n")
    open_doc(remote_client, uri, text)
    cancelled = fake_server.metric("parafill_cancelled_total")
    before = (await status(remote_client))["backend"]["cancelled"]
    fut = remote_client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, line, col), msg_id="rc-1"
    )
    await asyncio.sleep(3 * STEP_S)  # the model server is running it now
    remote_client.protocol.notify("$/cancelRequest", types.CancelParams(id="rc-1"))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wait_for(asyncio.wrap_future(fut), 10)
    for _ in range(50):
        if fake_server.metric("parafill_cancelled_total") > cancelled:
            break
        await asyncio.sleep(0.1)
    assert fake_server.metric("parafill_cancelled_total") > cancelled  # the server saw it go
    assert (await status(remote_client))["backend"]["cancelled"] > before


@lsp
async def test_lsp_server_down_says_so_once_and_falls_back(down_client: LanguageClient):
    uri = "file:///t/down.py"
    text, line, col = cursor_of("# expect: from_fallback\nz = |\n")
    open_doc(down_client, uri, text)
    items = await inline(down_client, uri, line, col)
    assert items and items[0].insert_text == "from_fallback"  # the built-in (here: fake) model
    items = await inline(down_client, uri, line, col)
    assert items and items[0].insert_text == "from_fallback"
    said = [m.message for m in down_client.messages if "cannot reach" in m.message]
    assert len(said) == 1 and "built-in model" in said[0], down_client.messages
    backend = (await status(down_client))["backend"]
    assert backend["kind"] == "remote" and backend["api"] == "fim"
    assert backend["fallback"] is True and "cannot reach" in backend["error"]


def test_a_stream_whose_client_left_before_the_first_byte_gives_its_queue_slot_back():
    """ASGI 2.4 servers raise from `send` once the client has gone: the streamed body never
    starts, and its queue slot used to stay taken (two such requests: 429 for everyone)."""
    from fastapi.testclient import TestClient

    from model.interface import InfillResult, never
    from model.serve.app import local_app
    from model.serve.options import ServeOptions

    class Instant:
        name = "instant"

        def infill(self, req, should_stop=never, late=None):
            return [InfillResult(["x"], -0.1, 1, None, 1, ["pad"])]

    app = local_app(ServeOptions(api_key_env="", max_queue=2), Instant())
    req = request_to_json(InfillRequest(["x = ", Hole(8), "\n"]))
    payload = json.dumps({**req, "stream": True}).encode()

    async def gone_client() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "path": "/v1/infill",
            "raw_path": b"/v1/infill",
            "query_string": b"",
            "root_path": "",
            "scheme": "http",
            "server": ("test", 80),
            "client": ("client", 1),
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
        messages = [{"type": "http.request", "body": payload, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            raise OSError("the client has gone")

        with contextlib.suppress(Exception):
            await app(scope, receive, send)

    for _ in range(3):
        asyncio.run(gone_client())
    assert app.state.parafill.inflight == 0
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.post("/v1/infill", json=req).status_code == 200
