"""The model server under abuse (issue #24), the app on real uvicorn in this process
(tests/http_serving.py) answered by a real HTTP client (httpx): malformed bodies answered 4xx in
every endpoint (a property-based test over bodies, hypothesis), browser-facing safety (JSON
content type, Host, no CORS), the time budget, a small request run between a large one's
steps, FIM conformance (n choices, stream_options, the enforced max_tokens, [DONE] after an
error, model_not_found), token counting off the event loop, and a client that leaves mid-body.

The shipped model where what it does matters (its tokenizer, its duplicate candidates, its
window); test backends of a few lines where time is the point.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest
from fake_infiller import FakeInfiller
from http_serving import serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.interface import InfillCancelled, InfillRequest, InfillResult, never
from model.serve.app import local_app
from model.serve.options import ServeOptions

FIM, INFILL = "/v1/fim/completions", "/v1/infill"


def options(**kw) -> ServeOptions:
    return ServeOptions(api_key_env="", **kw)


@pytest.fixture(scope="module")
def shipped():
    """The shipped model, loaded once; the server's limits and time budget around it."""
    from model import cpu_threads
    from model.infill import load_infiller

    infiller = load_infiller(None, "cpu", "auto")
    cpu_threads.apply(infiller, 1)
    return infiller


@pytest.fixture(scope="module")
def shipped_url(shipped):
    app = local_app(options(request_seconds=5, calibrate_batch=False), shipped)
    with serving(app) as url:
        yield url


def post(url: str, path: str, body, **kw) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60, **kw)


def raw(url: str, path: str, content: bytes, **headers) -> httpx.Response:
    headers = {"content-type": "application/json", **headers}
    return httpx.post(url + path, content=content, headers=headers, timeout=60)


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and "Traceback" not in r.text
    return error


# ---- malformed input: 4xx, never 500 ----------------------------------------------------------
SURROGATE = b'"x = \\ud800"'
BAD_BODIES = [
    (FIM, b'{"prompt": ' + SURROGATE + b"}", "lone surrogate"),
    (FIM, b'{"prompt": "x", "suffix": ' + SURROGATE + b"}", "lone surrogate"),
    (INFILL, b'{"segments": [' + SURROGATE + b', {"hole": {"max_tokens": 4}}]}', "surrogate"),
    (FIM, b"[" * 2000 + b"]" * 2000, "nested deeper"),
    (INFILL, b'{"segments": ' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper"),
    (FIM, b'{"prompt": "x", "temperature": NaN}', "NaN"),
    (FIM, b'{"prompt": "x", "top_p": Infinity}', "Infinity"),
    (INFILL, b'{"segments": ["a", {"hole": {"max_tokens": 4}}], "threshold": NaN}', "NaN"),
    (FIM, b'{"prompt": "x", "temperature": 1e999}', "too large"),
]


@pytest.mark.parametrize(("path", "content", "says"), BAD_BODIES)
def test_malformed_bodies_are_400_not_500(shipped_url, path, content, says):
    assert says in error_of(raw(shipped_url, path, content), 400)["message"]


def test_out_of_range_native_fields_are_422(shipped_url):
    hole = {"hole": {"max_tokens": 4}}
    for extra in ({"seed": 2**70}, {"temperature": -1}, {"threshold": 3}, {"tokens_per_step": 0}):
        r = post(shipped_url, INFILL, {"segments": ["x = ", hole, "\n"], **extra})
        assert next(iter(extra)) in error_of(r, 422)["message"]


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
small_ints = st.one_of(st.integers(-3, 40), st.just(2**40), st.text(max_size=3), st.none())
fim_bodies = st.fixed_dictionaries(
    {"prompt": st.text(max_size=40)},
    optional={
        "suffix": st.one_of(st.text(max_size=20), json_values),
        "max_tokens": small_ints,
        "n": small_ints,
        "temperature": st.one_of(st.floats(-1, 3), json_values),
        "top_p": st.one_of(st.floats(-1, 2), json_values),
        "stop": st.one_of(st.lists(st.text(max_size=3), max_size=20), json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "stream_options": st.one_of(
            st.fixed_dictionaries({"include_usage": json_values}), json_values
        ),
        "model": st.one_of(st.just("parafill"), st.text(max_size=8), json_values),
        "seed": small_ints,
    },
)


def mostly(valid, junk=json_values):
    """Valid values most of the time (so that whole bodies are often valid), junk otherwise."""
    return st.one_of(valid, valid, valid, valid, junk)


stop_rules = st.fixed_dictionaries(
    {},
    optional={
        "single_line": mostly(st.booleans()),
        "max_lines": mostly(st.integers(0, 4), small_ints),
        "dedent_below": mostly(st.integers(0, 8), small_ints),
        "open_brackets": mostly(st.integers(0, 3), small_ints),
        "inside_bracket": mostly(st.booleans()),
    },
)
holes = st.fixed_dictionaries(
    {
        "hole": st.fixed_dictionaries(
            {"max_tokens": mostly(st.integers(1, 12), small_ints)},
            optional={
                "min_tokens": mostly(st.integers(0, 2), small_ints),
                "single_line": mostly(st.booleans()),
                "stop": mostly(stop_rules),
            },
        )
    }
)
texts = st.text(max_size=20)
segments = mostly(
    st.tuples(texts, holes, texts).map(list)
    | st.lists(st.one_of(texts, holes), min_size=1, max_size=4)
)
native_bodies = st.fixed_dictionaries(
    {"segments": segments},
    optional={
        "candidates": mostly(st.integers(1, 3), small_ints),
        "steps": mostly(st.integers(1, 8), small_ints),
        "temperature": mostly(st.floats(0, 2), st.floats(-1, 3)),
        "threshold": mostly(st.floats(0.1, 1), st.floats(-1, 2)),
        "seed": mostly(st.integers(0, 2**31), small_ints),
        "schedule": mostly(st.sampled_from(["threshold", "linear", "cosine"]), st.text(max_size=5)),
        "tokens_per_step": mostly(st.integers(1, 4), small_ints),
        "stream": mostly(st.booleans()),
        "language": mostly(st.sampled_from(["python", "go", "rust"])),
        "want_trajectory": mostly(st.booleans()),
        "reuse_context": mostly(st.booleans()),
    },
)
# text with lone surrogates, as JSON escapes
surrogate_text = st.text(
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    asked=st.one_of(
        st.tuples(st.just(FIM), fim_bodies),
        st.tuples(st.just(INFILL), native_bodies),
        st.tuples(st.sampled_from([FIM, INFILL]), json_values),
    ),
    spoil=st.one_of(st.none(), surrogate_text, st.sampled_from(["NaN", "-Infinity", "deep"])),
)
def test_every_body_gets_json_and_never_a_500(shipped_url, asked, spoil):
    """Any body, in either endpoint: a JSON answer, 200 or 4xx, never 500."""
    path, body = asked
    content = json.dumps(body).encode()
    if spoil == "deep":
        content = b"[" * 3000 + content + b"]" * 3000
    elif spoil in ("NaN", "-Infinity") and content.startswith(b"{") and content != b"{}":
        content = b'{"temperature": ' + spoil.encode() + b", " + content[1:]
    elif spoil and content.startswith(b'{"prompt": "'):
        escaped = "".join(f"\\u{ord(c):04x}" for c in spoil).encode()
        content = content.replace(b'{"prompt": "', b'{"prompt": "' + escaped, 1)
    r = raw(shipped_url, path, content)
    assert r.status_code < 500, (content[:300], r.text[:500])
    if r.headers["content-type"].startswith("application/json"):
        data = r.json()
        assert r.status_code == 200 or set(data["error"]) == {"message", "type", "code"}
    else:  # a stream: events, the last one [DONE]
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]


# ---- browser-facing safety ---------------------------------------------------------------------
def test_posts_need_json_and_a_loopback_host_and_no_cors_is_sent():
    with serving(local_app(options(), FakeInfiller())) as url:
        body = json.dumps({"prompt": "# expect: ok\n"}).encode()
        r = httpx.post(url + FIM, content=body, headers={"content-type": "text/plain"})
        assert "application/json" in error_of(r, 415)["message"]
        r = httpx.post(
            url + FIM, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 415
        rebound = {"content-type": "application/json", "host": "evil.example:8000"}
        assert (
            "evil.example"
            in error_of(httpx.post(url + FIM, content=body, headers=rebound), 421)["message"]
        )
        assert httpx.get(url + "/v1/models", headers={"host": "evil.example"}).status_code == 421
        port = url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            r = httpx.post(
                url + FIM, content=body, headers={"content-type": "application/json", "host": host}
            )
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == "ok", host
        origin = {"origin": "https://evil.example"}
        r = httpx.post(url + FIM, json={"prompt": "# expect: ok\n"}, headers=origin)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        pre = httpx.options(url + FIM, headers={**origin, "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in pre.headers


def test_configured_names_and_origins(monkeypatch):
    monkeypatch.setenv("PARAFILL_T_KEY", "k")
    app = local_app(
        ServeOptions(
            api_key_env="", allowed_hosts=("parafill.test",), cors_origins=("https://ok.test",)
        ),
        FakeInfiller(),
    )
    with serving(app) as url:
        r = post(
            url,
            FIM,
            {"prompt": "# expect: ok\n"},
            headers={"host": "parafill.test", "origin": "https://ok.test"},
        )
        assert (
            r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ok.test"
        )
    # with a token, the Host is not checked (a page does not have the token)
    app = local_app(ServeOptions(api_key_env="PARAFILL_T_KEY"), FakeInfiller())
    with serving(app) as url:
        r = post(
            url,
            FIM,
            {"prompt": "# expect: ok\n"},
            headers={"host": "team.example", "authorization": "Bearer k"},
        )
        assert r.status_code == 200


def test_a_named_token_variable_that_is_unset_refuses_to_start(monkeypatch):
    monkeypatch.delenv("PARAFILL_T_UNSET", raising=False)
    with pytest.raises(ValueError, match="PARAFILL_T_UNSET"):
        local_app(ServeOptions(api_key_env="PARAFILL_T_UNSET"), FakeInfiller())


# ---- time: a budget per request, and the model thread shared ----------------------------------
class Stepper:
    """A backend whose request takes `max_tokens` steps of STEP_S (its lock: `lock_kind`)."""

    name, device = "stepper", "cpu"
    STEP_S = 0.02

    def __init__(self, lock_kind=threading.RLock):
        self.lock = lock_kind()
        self.steps_run = 0

    def count_tokens(self, text: str) -> int:
        return 1

    def infill(self, req: InfillRequest, should_stop=never, late=None) -> list[InfillResult]:
        with self.lock:
            steps = sum(h.max_tokens for h in req.holes) * req.candidates
            for _ in range(steps):
                if should_stop():
                    raise InfillCancelled()
                time.sleep(self.STEP_S)
                self.steps_run += 1
            return [InfillResult(["done"], -0.1, steps, None, 1, ["pad"])]


def test_a_request_past_its_time_budget_ends_with_a_clear_error():
    backend = Stepper()
    with serving(local_app(options(request_seconds=0.5), backend)) as url:
        t0 = time.perf_counter()
        r = post(url, FIM, {"prompt": "x", "max_tokens": 200})  # 4 s of steps
        took = time.perf_counter() - t0
        error = error_of(r, 408)
        assert error["type"] == "timeout_error" and "0.5 s" in error["message"]
        assert took < 1.5 and backend.steps_run < 60
        ok = post(url, FIM, {"prompt": "x", "max_tokens": 5})
        assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == "done"
        stream = post(url, FIM, {"prompt": "x", "max_tokens": 200, "stream": True})
        assert stream.status_code == 200
        events = [line for line in stream.text.splitlines() if line.startswith("data: ")]
        assert json.loads(events[-2][6:])["error"]["code"] == 408 and events[-1] == "data: [DONE]"


@pytest.mark.parametrize("lock_kind", [threading.RLock, threading.Lock])
def test_a_small_request_runs_between_a_large_ones_steps(lock_kind):
    """A large request (8 candidates x 30 tokens: 240 steps, 4.8 s) and a small one (5 steps)
    sent 0.3 s after it: the small one is answered within its own cost plus one step, while
    the large one runs on. An infiller whose lock cannot be taken again by its own thread
    (a plain Lock) cannot run the small one there: it waits for the large one."""
    backend = Stepper(lock_kind)
    with serving(local_app(options(), backend)) as url:
        big: dict = {}

        def large() -> None:
            big["r"] = post(url, FIM, {"prompt": "x", "max_tokens": 30, "n": 8})
            big["t"] = time.perf_counter()

        thread = threading.Thread(target=large)
        thread.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        small = post(url, FIM, {"prompt": "y", "max_tokens": 5})
        small_s = time.perf_counter() - t0
        thread.join()
        assert small.status_code == 200 and big["r"].status_code == 200
        if lock_kind is threading.RLock:
            assert small_s < 0.6, small_s
            assert big["t"] > t0 + small_s  # the large one was still running
            assert httpx.get(url + "/health").json()["interleaved"] >= 1
        else:
            assert small_s > 3, small_s


def test_the_shipped_model_answers_a_small_request_behind_the_heaviest_legal_one(shipped):
    """The heaviest legal FIM request on a CPU (256 tokens x 4 candidates, temperature 1.5: 8
    candidates of 256 are refused, each of their steps took 1.9 s) runs; a small one sent 1 s
    later is answered within 3 s: the infiller's lock is re-entrant, so the cheaper request
    runs from within the heavy one's stop check (model/serve/interleave.py)."""
    assert isinstance(shipped.lock, type(threading.RLock()))
    with serving(local_app(options(request_seconds=8, calibrate_batch=False), shipped)) as url:
        heavy = {"prompt": "def f(x):\n", "max_tokens": 256, "n": 8, "temperature": 1.5}
        assert "at most 1024" in error_of(post(url, FIM, heavy), 422)["message"]
        heavy["n"] = 4
        done: dict = {}
        thread = threading.Thread(target=lambda: done.setdefault("r", post(url, FIM, heavy)))
        thread.start()
        time.sleep(1.0)
        t0 = time.perf_counter()
        line = "total = 0\nfor v in values:\n    total += "
        small = post(url, FIM, {"prompt": line, "max_tokens": 24, "stop": ["\n"]})
        small_s = time.perf_counter() - t0
        thread.join()
        assert small.status_code == 200 and small_s < 3.0, small_s
        assert done["r"].status_code in (200, 408)
        assert httpx.get(url + "/health").json()["interleaved"] >= 1


# ---- FIM conformance ---------------------------------------------------------------------------
def test_n_choices_always_even_when_candidates_are_equal(shipped_url):
    r = post(
        shipped_url,
        FIM,
        {"prompt": "def add(a, b):\n    return ", "max_tokens": 8, "n": 3, "stop": ["\n"]},
    )
    data = r.json()
    assert r.status_code == 200 and [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in data["choices"]}) < 3  # greedy: the same text again


def test_stream_options_include_usage(shipped_url):
    body = {"prompt": "x = ", "max_tokens": 4, "stream": True}
    events = sse(post(shipped_url, FIM, {**body, "stream_options": {"include_usage": True}}))
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] >= 0
    assert all(e.get("usage") is None for e in events[:-1])
    assert all("usage" not in e for e in sse(post(shipped_url, FIM, body)))


def sse(r: httpx.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    lines = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_max_tokens_over_the_models_half_window_is_refused_before_admission(shipped_url):
    models = httpx.get(shipped_url + "/v1/models").json()["data"][0]
    assert models["max_tokens"] == 256
    for stream in (False, True):
        r = post(shipped_url, FIM, {"prompt": "x", "max_tokens": 300, "stream": stream})
        assert "256" in error_of(r, 422)["message"]
    r = post(
        shipped_url,
        INFILL,
        {"segments": ["a", {"hole": {"max_tokens": 200}}, "b", {"hole": {"max_tokens": 200}}]},
    )
    assert "256" in error_of(r, 422)["message"]
    assert (
        post(shipped_url, FIM, {"prompt": "x = ", "max_tokens": 256, "stop": ["\n"]}).status_code
        == 200
    )


def test_a_stream_that_fails_ends_with_done():
    with serving(local_app(options(), FakeInfiller())) as url:
        r = post(url, FIM, {"prompt": "# fake: raise\n", "stream": True})
        lines = [line for line in r.text.splitlines() if line.startswith("data: ")]
        assert r.status_code == 200 and lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["error"]["code"] == 422  # the backend refused it


def test_an_unknown_model_is_404_model_not_found(shipped_url):
    error = error_of(post(shipped_url, FIM, {"prompt": "x", "model": "gpt-4"}), 404)
    assert error["code"] == "model_not_found"
    assert (
        post(shipped_url, FIM, {"prompt": "x = ", "model": "parafill", "max_tokens": 2}).status_code
        == 200
    )


# ---- the event loop stays free ------------------------------------------------------------------
def test_health_answers_while_a_large_prompt_is_counted(shipped):
    app = local_app(options(max_body_bytes=4 << 20, calibrate_batch=False), shipped)
    with serving(app) as url:
        prompt = "value = compute(alpha, beta) + 1\n" * (1 << 15)  # 1 MiB
        thread = threading.Thread(
            target=lambda: post(url, FIM, {"prompt": prompt, "max_tokens": 4})
        )
        thread.start()
        slowest = 0.0
        while thread.is_alive():
            t0 = time.perf_counter()
            assert httpx.get(url + "/health", timeout=30).status_code == 200
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.02)
        thread.join()
        assert slowest < 0.5, slowest  # 2.3 s when the count held the GIL on the loop


def test_a_client_that_leaves_mid_body_logs_no_error(caplog):
    with serving(local_app(options(), FakeInfiller())) as url:
        host, port = url.removeprefix("http://").split(":")
        with caplog.at_level(logging.INFO, logger="parafill.serve"):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(
                    f"POST {FIM} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    'Content-Length: 1000\r\n\r\n{"prompt": '.encode()
                )
                time.sleep(0.2)
            time.sleep(0.5)
            assert httpx.get(url + "/health").status_code == 200
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_token_variable_named_on_purpose_must_be_set(monkeypatch):
    """`--api-key-env` naming the default's variable on purpose, unset: refused like any other
    named variable (left out, the default's variable is only used when it is set)."""
    from model.serve.options import DEFAULT_API_KEY_ENV, check_options

    monkeypatch.delenv(DEFAULT_API_KEY_ENV, raising=False)
    check_options(ServeOptions())  # not named: loopback without a token
    with pytest.raises(ValueError, match="not set"):
        check_options(ServeOptions(api_key_env=DEFAULT_API_KEY_ENV, api_key_env_given=True))
