"""Stopping a fill once its scope has ended (Hole.ends, from the server's stop rules): with the
shipped model, the post-processed fill is the one a full decode gives, in fewer passes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lsp_server.config import Settings
from lsp_server.pipeline import build_request, region_candidates
from lsp_server.planner import plan_completion
from model.infill import load_infiller
from model.interface import Hole

CASES = [  # (text with | at the cursor, region kind the planner picks)
    (
        "import os\n\n\ndef size(path):\n    return os.path.getsize(|\n\n\nprint(size('.'))\n",
        "statement",
    ),
    ("def add(a, b):\n    return a + b\n\n\nclass Stack:\n    def push(self, item):\n|", "block"),
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
