"""engine.py with the fake Infiller: background load, superseding, cancellation, cache,
load errors, typing-through."""

from __future__ import annotations

import threading
import time

import pytest
from fake_infiller import FakeInfiller, load

from lsp_server.engine import ERROR, READY, Engine, ModelUnavailable, TypingThrough
from lsp_server.postprocess import Candidate
from model.interface import Hole, InfillCancelled, InfillRequest, StopRules


def req(prefix: str = "# expect: 1\nx = ", **kw) -> InfillRequest:
    return InfillRequest(segments=[prefix, Hole(8), "\n"], **kw)


def ready_engine() -> Engine:
    """A loaded engine over a fake backend whose fills take 10 steps of 50 ms."""
    engine = Engine(lambda p, d, *_: FakeInfiller(step_delay=0.05, steps=10))
    engine.load()
    engine.wait_ready(5)
    return engine


def test_loads_in_background_and_waits():
    gate = threading.Event()

    def slow_loader(path, device, *_):
        gate.wait(5)
        return FakeInfiller()

    engine = Engine(slow_loader)
    t0 = time.perf_counter()
    engine.load()
    assert time.perf_counter() - t0 < 2 and engine.state == "loading"
    job = engine.submit("a", req())
    time.sleep(0.1)
    assert not job.future.done()  # waits for the load, does not fail
    gate.set()
    assert job.future.result(5)[0].fills == ["1"]
    assert engine.state == READY and engine.model_name == "fake"


def test_load_error_is_reported():
    engine = Engine(load)
    engine.load("missing-here")
    assert not engine.wait_ready(5)
    assert engine.state == ERROR and "missing-here/config.json" in engine.error
    with pytest.raises(ModelUnavailable, match="config.json"):
        engine.run(req(), timeout=5)


def test_newer_request_supersedes_older():
    engine = Engine(lambda p, d, *_: FakeInfiller(step_delay=0.05, steps=10))
    engine.load()
    first = engine.submit("doc", req("# expect: a\n"))
    time.sleep(0.12)  # running now
    second = engine.submit("doc", req("# expect: b\n"))
    other = engine.submit("other-doc", req("# expect: c\n"))
    with pytest.raises(InfillCancelled):
        first.future.result(5)
    assert second.future.result(5)[0].fills == ["b"]
    assert other.future.result(5)[0].fills == ["c"]  # another document is not superseded
    st = engine.status()
    assert st["superseded"] == 1 and st["cancelled"] == 1 and st["completed"] == 2


def test_a_prefetch_is_taken_over_by_the_same_request():
    engine = ready_engine()
    spec = engine.submit("doc", req("# expect: next\n"), speculative=True)
    time.sleep(0.12)  # running now
    real = engine.submit("doc", req("# expect: next\n"))
    assert real is spec and not spec.speculative  # the same job: no new run
    assert real.future.result(5)[0].fills == ["next"]
    st = engine.status()
    assert st["prefetched"] == 1 and st["prefetchUsed"] == 1
    assert st["requests"] == 1 and st["superseded"] == 0 and st["completed"] == 1


def test_a_prefetch_gives_way_to_any_real_request_and_is_not_counted():
    engine = ready_engine()
    spec = engine.submit("doc", req("# expect: guess\n"), speculative=True)
    time.sleep(0.12)
    other = engine.submit("other-doc", req("# expect: c\n"))  # another document
    with pytest.raises(InfillCancelled):
        spec.future.result(5)
    assert other.future.result(5)[0].fills == ["c"]
    st = engine.status()
    assert (st["prefetched"], st["prefetchUsed"]) == (1, 0)
    assert st["superseded"] == 0 and st["cancelled"] == 0 and st["completed"] == 1
    assert st["latencyMs"]["n"] == 1  # statistics are of the fills someone asked for


def test_a_prefetch_never_stops_a_fill_someone_asked_for():
    engine = ready_engine()
    real = engine.submit("doc", req("# expect: asked\n"))
    time.sleep(0.12)  # running now
    spec = engine.submit("doc", req("# expect: guess\n"), speculative=True)
    assert spec.future.cancelled()
    assert real.future.result(5)[0].fills == ["asked"]
    st = engine.status()
    assert st["prefetched"] == 0 and st["superseded"] == 0 and st["completed"] == 1


def test_a_stopped_prefetch_is_not_taken_over():
    engine = ready_engine()
    spec = engine.submit("doc", req("# expect: next\n"), speculative=True)
    time.sleep(0.12)
    spec.cancel()  # as a real request elsewhere does; it has not reached its next step yet
    real = engine.submit("doc", req("# expect: next\n"))
    assert real is not spec
    assert real.future.result(5)[0].fills == ["next"]
    assert engine.status()["prefetchUsed"] == 0


def test_a_finished_prefetch_answers_from_the_cache():
    engine = Engine(lambda p, d, *_: FakeInfiller())
    engine.load()
    engine.wait_ready(5)
    engine.submit("doc", req("# expect: ready\n"), speculative=True).future.result(5)
    assert engine.status()["completed"] == 0
    job = engine.submit("doc", req("# expect: ready\n"))
    assert job.future.done() and job.future.result()[0].fills == ["ready"]
    st = engine.status()
    assert st["cacheHits"] == 1 and st["prefetchUsed"] == 1
    engine.submit("doc", req("# expect: ready\n")).future.result(5)
    assert engine.status()["prefetchUsed"] == 1  # a later hit on it is an ordinary cache hit


def test_cancel_stops_within_a_step():
    engine = Engine(lambda p, d, *_: FakeInfiller(step_delay=0.1, steps=50))
    engine.load()
    job = engine.submit("doc", req())
    time.sleep(0.25)
    t0 = time.perf_counter()
    job.cancel()
    with pytest.raises(InfillCancelled):
        job.future.result(5)
    assert time.perf_counter() - t0 < 1.5  # one step is 0.1 s; the whole job would be 5 s


def test_cache_hits_and_lru_eviction():
    fake = FakeInfiller()
    engine = Engine(lambda p, d, *_: fake, cache_size=2)
    engine.load()
    engine.run(req("# expect: 1\n"))
    engine.run(req("# expect: 1\n"))
    assert fake.calls == 1 and engine.status()["cacheHits"] == 1
    engine.run(req("# expect: 2\n"))
    engine.run(req("# expect: 3\n"))  # evicts "1"
    engine.run(req("# expect: 1\n"))
    assert fake.calls == 4 and engine.status()["cacheEntries"] == 2
    engine.run(req("# expect: 1\n", steps=2))  # different options: different key
    assert fake.calls == 5
    block = Hole(8, stop=StopRules())  # a fill that may span lines: a deadline cuts it
    timed = InfillRequest(["# expect: 4\n", block, "\n"], deadline=time.time() - 1)
    for _ in range(2):
        assert engine.run(timed)[0].ended_by == ["deadline"]
    assert fake.calls == 7 and engine.status()["cacheHits"] == 1


def test_latency_stats():
    engine = Engine(lambda p, d, *_: FakeInfiller())
    engine.load()
    for i in range(5):
        engine.run(req(f"# expect: {i}\n"))
    lat = engine.status()["latencyMs"]
    assert lat["n"] == 5 and lat["p50"] is not None and lat["p95"] >= lat["p50"]


def test_latency_by_kind_and_cancelled_runs_keep_no_frames():
    engine = Engine(lambda p, d, *_: FakeInfiller(step_delay=0.05, steps=10))
    engine.load()
    engine.submit("doc", req("# expect: a\n"), "line").future.result(5)
    engine.submit("doc", req("# expect: b\n"), "block").future.result(5)
    by_kind = engine.status()["latencyMs"]["byKind"]
    assert set(by_kind) == {"block", "line"} and by_kind["line"]["n"] == 1
    job = engine.submit("doc", req("# expect: c\n"), "line")
    time.sleep(0.12)
    job.cancel()
    exc = job.future.exception(5)
    # a traceback would keep the run's frames (and tensors) alive through the future
    assert isinstance(exc, InfillCancelled) and exc.__traceback__ is None


def test_fallback_request_only_when_the_first_decode_is_not_clean():
    from lsp_server.pipeline import fallback_request, merge_candidates

    first = req(end_rule="frontier")
    clean, broken = Candidate("x", -0.1, 0, 0), Candidate("x(", -0.05, 0, 1)
    assert fallback_request(first, [clean]) is None
    second = fallback_request(first, [broken])
    assert second is not None and second.end_rule == "confident"
    assert fallback_request(second, []) is None  # never a third decode
    assert fallback_request(req(schedule="ltr", end_rule="frontier"), []) is None
    assert fallback_request(req(), []) is None  # the backend's default rule: no retry
    assert fallback_request(first, []) is not None  # nothing usable at all
    merged = merge_candidates([broken], [Candidate("y", -0.9, 0, 0), clean])
    assert [c.text for c in merged] == ["x", "y", "x("]


def test_typing_through():
    tt = TypingThrough()
    text = "x = \ny = 2\n"
    tt.remember("d", text, 4, [Candidate("compute(1)"), Candidate("com + 1")])
    typed = "x = com\ny = 2\n"
    rest = tt.rest("d", typed, 7)
    assert [r for _, r in rest] == ["pute(1)", " + 1"]
    assert tt.rest("d", "x = cat\ny = 2\n", 7) == []  # typed something else
    assert tt.rest("d", "x = com\ny = 3\n", 7) == []  # suffix changed
    assert tt.rest("d", "z = com\ny = 2\n", 7) == []  # prefix changed
    full = tt.rest("d", "x = compute(1)\ny = 2\n", 14)  # typed (or taken) in full
    assert [(c.text, r) for c, r in full] == [("compute(1)", "")]
    assert tt.rest("d", "x = compute(1))\ny = 2\n", 15) == []  # typed past it
    tt.forget("d")
    assert tt.rest("d", typed, 7) == []


def test_the_same_request_twice_joins_the_running_one():
    """An editor asking twice at one place (Neovim does): one model run answers both."""
    fake = FakeInfiller(step_delay=0.05, steps=6)
    engine = Engine(lambda p, d, *_: fake)
    engine.load()
    assert engine.wait_ready(5)
    first = engine.submit("doc", req("# expect: twice\n"))
    time.sleep(0.1)  # under way
    second = engine.submit("doc", req("# expect: twice\n"))
    assert second is first
    assert first.future.result(5)[0].fills == ["twice"]
    st = engine.status()
    assert fake.calls == 1 and st["requests"] == 2 and st["superseded"] == 0


def test_a_joined_job_runs_on_while_one_of_its_requests_waits():
    """Two requests share a run: the first leaving (its client cancelled) does not stop it."""
    fake = FakeInfiller(step_delay=0.05, steps=6)
    engine = Engine(lambda p, d, *_: fake)
    engine.load()
    assert engine.wait_ready(5)
    first = engine.submit("doc", req("# expect: shared\n"))
    time.sleep(0.05)
    second = engine.submit("doc", req("# expect: shared\n"))
    engine.release(first)  # the first request's client cancelled it
    assert second.future.result(5)[0].fills == ["shared"]
    engine.release(second)  # the last one leaving a finished job changes nothing
    assert engine.status()["cancelled"] == 0


def test_a_model_switch_during_a_run_does_not_cache_the_old_models_answer():
    models = iter([FakeInfiller(step_delay=0.1, steps=5), FakeInfiller()])
    engine = Engine(lambda p, d, *_: next(models))
    engine.load("a")
    assert engine.wait_ready(5)
    running = engine.submit("doc", req("# expect: old\n"))
    time.sleep(0.1)
    engine.load("b")  # loads aside; takes over while the old model still runs
    running.future.result(5)
    for _ in range(50):
        if engine.status()["modelPath"] == "b" and engine.status()["loading"] is None:
            break
        time.sleep(0.05)
    engine.run(req("# expect: old\n"))
    assert engine.status()["cacheHits"] == 0  # answered by the new model, not the old cache


def test_lowering_the_cache_size_evicts_and_zero_turns_the_cache_off():
    fake = FakeInfiller()
    engine = Engine(lambda p, d, *_: fake, cache_size=4)
    engine.load()
    for i in range(4):
        engine.run(req(f"# expect: {i}\n"))
    assert engine.status()["cacheEntries"] == 4
    engine.cache_size = 1
    assert engine.status()["cacheEntries"] == 1
    engine.cache_size = 0
    engine.run(req("# expect: 3\n"))
    assert engine.status()["cacheEntries"] == 0 and engine.status()["cacheHits"] == 0


def test_the_language_is_part_of_what_is_asked():
    from lsp_server.engine import request_key

    assert request_key(req(language="python")) != request_key(req(language="rust"))


def test_forgetting_a_document_stops_its_job_and_keeps_nothing():
    engine = Engine(lambda p, d, *_: FakeInfiller(step_delay=0.05, steps=20))
    engine.load()
    assert engine.wait_ready(5)
    job = engine.submit("doc", req())
    time.sleep(0.1)
    engine.forget("doc")
    with pytest.raises(InfillCancelled):
        job.future.result(5)
    assert engine.status()["cancelled"] == 1
