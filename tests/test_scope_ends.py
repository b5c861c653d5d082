"""Stopping a fill early (Hole.ends, the server's EndCheck): once its scope has ended or it
repeats itself, the post-processed fill is the one a full decode gives, in fewer passes (with the
shipped model); past an as-you-type request's deadline, at a finished line, which is then what
the suggestion shows."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from lsp_server.config import Settings
from lsp_server.pipeline import (
    EndCheck,
    build_request,
    deadline_cut,
    fallback_request,
    region_candidates,
    take_deadlines,
)
from lsp_server.planner import StopRules, plan_completion
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
    assert holes and all(h.ends is not None for h in holes)
    plain = replace(
        req,
        segments=[replace(s, ends=None) if isinstance(s, Hole) else s for s in req.segments],
    )
    m = load_infiller()
    early, full = m.infill(req)[0], m.infill(plain)[0]
    cut = [region_candidates(plan, text, [r])[0].text for r in (early, full)]
    assert cut[0] == cut[1]
    assert early.steps_used < full.steps_used  # the shipped model runs on past both scopes


BLOCK_BODY = StopRules(dedent_below=0)


@pytest.mark.parametrize(
    "fill,ended,kept",
    [
        ("x = f(a)\n    y = g(", True, "x = f(a)"),  # a finished line: ends, keeps it
        ("x = f(a)", False, None),  # the first line is not finished yet
        ("for x in y:\n        ", False, None),  # a header: its body is still to come
        ("x = f(a,\n      b", False, None),  # a bracket still open
        ("x = 1\n    y = 2\n    z", True, "x = 1\n    y = 2"),
        ('"""Return the files.\n    Sorted.\n    ', False, None),  # a docstring still open
        ('"""Return the files."""\n    x = f(', True, '"""Return the files."""'),
    ],
)
def test_past_its_deadline_a_fill_ends_at_a_finished_line(fill, ended, kept):
    late = EndCheck(BLOCK_BODY, "python", deadline=time.monotonic() - 1)
    assert late(fill) is ended
    assert late.trim(fill) == (kept if ended else fill)
    for check in (
        EndCheck(BLOCK_BODY, "python"),
        EndCheck(BLOCK_BODY, "python", deadline=time.monotonic() + 60),
    ):
        assert check(fill) is False  # no deadline, or not yet
        assert check.trim(fill) == fill


def test_a_deadline_applies_to_fills_that_may_span_lines_and_not_to_explicit_requests():
    text = "import os\n\n\ndef list_files(root):\n    \n"
    block = plan_completion(text, text.index("    \n") + 4, "python")
    line = plan_completion("x = 1\ny = ", len("x = 1\ny = "), "python")
    assert block.kind == "block" and line.kind == "line"
    assert build_request(block, text, Settings(), deadline_ms=100).holes[0].ends.deadline
    assert (
        build_request(line, "x = 1\ny = ", Settings(), deadline_ms=100).holes[0].ends.deadline
        is None
    )
    assert build_request(block, text, Settings()).holes[0].ends.deadline is None
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
        out[ms] = (results[0].steps_used, region_candidates(plan, text, results, req=req)[0].text)
        assert deadline_cut(req) is bool(ms)
    (full_steps, full), (cut_steps, cut) = out[0], out[1]
    assert "\n" in full and "\n" not in cut and full.startswith(cut + "\n")
    assert cut_steps < full_steps


def test_a_request_taking_a_prefetch_over_gives_it_its_deadline():
    text = "import os\n\n\ndef list_files(root):\n    \n"
    block = plan_completion(text, text.index("    \n") + 4, "python")
    prefetch = build_request(block, text, Settings())  # a prefetch runs without a deadline
    asked = build_request(block, text, Settings(), deadline_ms=100)
    assert prefetch.holes[0].ends.deadline is None
    take_deadlines(asked, prefetch)
    assert prefetch.holes[0].ends.deadline == asked.holes[0].ends.deadline is not None
