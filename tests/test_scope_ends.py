"""Stopping a fill early by its hole's stop rules (plain data the backend evaluates with
model/codetext.py): once its scope has ended or it repeats itself, the post-processed fill is the
one a full decode gives, in fewer passes (with the shipped model), and the result says why it
ended; past an as-you-type request's deadline, at a finished line, which is then what the
suggestion shows. A prefetch a request takes over gets that request's deadline."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from fake_infiller import FakeInfiller

from lsp_server.config import Settings
from lsp_server.engine import Engine
from lsp_server.pipeline import build_request, deadline_cut, fallback_request, region_candidates
from lsp_server.planner import plan_completion
from model.infill import load_infiller
from model.interface import Hole

CASES = [  # (text with | at the cursor, region kind the planner picks)
    (
        "import os\n\n\ndef size(path):\n    return os.path.getsize(|\n\n\nprint(size('.'))\n",
        "statement",
    ),
    ("def add(a, b):\n    return a + b\n\n\nclass Stack:\n    def push(self, item):\n|", "block"),
    # arguments on their own lines: the shipped model repeats the last line until its budget ends
    (
        (
            "class Server:\n    def start(self):\n        self.transport = Transport(\n"
            "            port=self.port,\n            |\n        )\n"
        ),
        "bracket",
    ),
    (
        (
            "import argparse\n\n\ndef main():\n    parser = argparse.ArgumentParser()\n"
            '    parser.add_argument(\n        "--verbose",\n        |\n    )\n    return parser\n'
        ),
        "bracket",
    ),
]


@pytest.mark.parametrize("marked,kind", CASES)
def test_scope_end_gives_the_same_fill_in_fewer_passes(marked, kind):
    text = marked.replace("|", "")
    plan = plan_completion(text, marked.index("|"), "python")
    assert plan.kind == kind
    req = build_request(plan, text, Settings())
    holes = [s for s in req.segments if isinstance(s, Hole)]
    assert holes and all(h.stop == r.stop for h, r in zip(holes, plan.regions))
    plain = replace(
        req,
        segments=[replace(s, stop=None) if isinstance(s, Hole) else s for s in req.segments],
    )
    m = load_infiller()
    early, full = m.infill(req)[0], m.infill(plain)[0]
    cut = [region_candidates(plan, text, [r])[0].text for r in (early, full)]
    assert cut[0] == cut[1]
    assert early.steps_used < full.steps_used  # the shipped model runs on past both scopes
    assert early.ended_by[0] in ("scope", "repeat") and full.ended_by[0] in ("pad", "budget")


def test_a_request_carries_its_deadline_and_explicit_requests_have_none():
    text = "import os\n\n\ndef list_files(root):\n    \n"
    block = plan_completion(text, text.index("    \n") + 4, "python")
    assert block.kind == "block"
    t0 = time.time()
    deadline = build_request(block, text, Settings(), deadline_ms=100).deadline
    assert deadline is not None and t0 + 0.1 <= deadline <= time.time() + 0.1
    assert build_request(block, text, Settings()).deadline is None
    late = build_request(block, text, Settings(), deadline_ms=1)
    time.sleep(0.01)
    assert fallback_request(late, []) is None  # past its deadline: no second decode
    assert fallback_request(build_request(block, text, Settings()), []) is not None


def test_with_the_shipped_model_a_deadline_shows_the_finished_lines_sooner():
    marked = (
        "def connect(host, port, reader, writer):\n    return Connection(\n        host=host,\n"
        "        |\n    )\n"
    )
    text = marked.replace("|", "")
    plan = plan_completion(text, marked.index("|"), "python")
    m = load_infiller()
    out = {}
    for ms in (0, 1):
        req = build_request(plan, text, Settings(), deadline_ms=ms)
        results = m.infill(req)
        out[ms] = (results[0].steps_used, region_candidates(plan, text, results)[0].text)
        assert deadline_cut(results) is bool(ms)
        assert results[0].ended_by == (["deadline"] if ms else [results[0].ended_by[0]])
    (full_steps, full), (cut_steps, cut) = out[0], out[1]
    assert "\n" in full and "\n" not in cut and full.startswith(cut + "\n")
    assert cut_steps < full_steps


def test_a_request_taking_a_prefetch_over_gives_it_its_deadline():
    text = "# expect: return []\nimport os\n\n\ndef list_files(root):\n    \n"
    block = plan_completion(text, text.index("    \n") + 4, "python")
    assert block.kind == "block"
    prefetch = build_request(block, text, Settings())  # a prefetch runs without a deadline
    asked = replace(prefetch, deadline=time.time() - 1)  # the user is waiting: past it
    engine = Engine(lambda p, d, *_: FakeInfiller(step_delay=0.05, steps=8))
    engine.load()
    assert engine.wait_ready(5)
    running = engine.submit("doc", prefetch, speculative=True)
    time.sleep(0.1)  # under way
    taken = engine.submit("doc", asked)
    assert taken is running and taken.deadline == asked.deadline
    assert taken.future.result(5)[0].ended_by == ["deadline"]
    assert engine.status()["prefetchUsed"] == 1 and engine.status()["cacheEntries"] == 0
    alone = engine.submit("other", prefetch, speculative=True).future.result(5)
    assert alone[0].ended_by == ["pad"]  # no one waiting: no deadline
