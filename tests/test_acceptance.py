"""lsp_server/acceptance.py: each suggestion's outcome counted once (the editor's command or what
is typed next), per region kind and language, logged as one line and read back from the log;
lsp_server/steps.py: the record parafill/steps answers with; the accept command on items."""

from __future__ import annotations

import json

from lsp_server.acceptance import (
    ACCEPTED_COMMAND,
    Tracker,
    format_summary,
    log_line,
    parse_line,
    summarize_log,
)
from lsp_server.convert import completion_items, inline_items
from lsp_server.postprocess import Candidate
from lsp_server.steps import MASK, Denoising
from lsp_server.syntax import Document
from model.interface import InfillResult

URI = "file:///a.py"


def tracker() -> tuple[Tracker, list[dict]]:
    logged: list[dict] = []
    return Tracker(logged.append), logged


def test_accepted_by_the_command_counts_once():
    t, logged = tracker()
    sid = t.shown(URI, "line", "python", ["x + 1"], 80.0, anchor=1)
    assert t.current(URI) == sid
    assert t.accepted(sid) is True
    assert t.accepted(sid) is False, "a second command for it is not counted"
    t.typed(URI, [("x + 1", "")])  # the editor then asks at the end of it: nothing more
    t.left(URI, anchor=2)
    s = t.summary()
    assert (s["shown"], s["accepted"], s["partial"], s["dismissed"], s["pending"]) == (
        1,
        1,
        0,
        0,
        0,
    )
    assert s["acceptRate"] == 1.0 and s["acceptedModelMs"] == {"p50": 80.0, "mean": 80.0}
    assert [r["outcome"] for r in logged] == ["accepted"]
    assert logged[0]["by"] == "command" and logged[0]["taken"] == 5


def test_typed_in_full_is_accepted_and_the_late_command_ignored():
    t, logged = tracker()
    sid = t.shown(URI, "line", "python", ["foo()"], 50.0, anchor=1)
    t.typed(URI, [("foo()", "o()")])
    assert t.current(URI) == sid, "still open while it is typed"
    t.typed(URI, [("foo()", "")])
    assert t.current(URI) is None
    assert t.accepted(sid) is False
    assert [(r["outcome"], r["by"]) for r in logged] == [("accepted", "typing")]


def test_partial_then_replaced_is_accepted_in_part():
    t, logged = tracker()
    t.shown(URI, "line", "python", ["alpha beta gamma"], 90.0, anchor=1)
    t.typed(URI, [("alpha beta gamma", "beta gamma")])  # accept-next-word
    t.typed(URI, [("alpha beta gamma", "gamma")])
    t.left(URI, anchor=7)  # then something else is typed
    assert [(r["outcome"], r["taken"], r["length"]) for r in logged] == [("partial", 11, 16)]
    s = t.summary()
    assert s["partial"] == 1 and s["acceptRate"] == 0.0 and s["partialRate"] == 1.0
    assert s["acceptedModelMs"]["p50"] is None, "model time is of accepted suggestions"


def test_replaced_without_taking_anything_is_dismissed():
    t, logged = tracker()
    t.shown(URI, "line", "python", ["abc"], 10.0, anchor=1)
    t.shown(URI, "block", "python", ["def"], 20.0, anchor=2)  # a new suggestion replaces it
    t.closed(URI)
    assert [(r["outcome"], r["kind"], r["by"]) for r in logged] == [
        ("dismissed", "line", "replaced"),
        ("dismissed", "block", "closed"),
    ]


def test_asked_again_at_the_same_place_is_the_same_suggestion():
    t, logged = tracker()
    sid = t.shown(URI, "line", "python", ["abc"], 10.0, anchor=5)
    t.left(URI, anchor=5)  # the same place, nothing typed: still open
    assert t.shown(URI, "line", "python", ["abc"], 0.0, anchor=5) == sid
    assert t.summary()["shown"] == 1 and not logged


def test_counts_by_kind_and_language_and_documents_apart():
    t, _ = tracker()
    a = t.shown("file:///a.py", "line", "python", ["x"], 10.0, anchor=1)
    t.shown("file:///b.go", "block", "go", ["y"], 30.0, anchor=1)
    t.accepted(a)
    t.closed("file:///b.go")
    s = t.summary()
    assert s["byKind"]["line"]["accepted"] == 1 and s["byKind"]["block"]["dismissed"] == 1
    assert s["byLanguage"]["python"]["acceptRate"] == 1.0
    assert s["byLanguage"]["go"]["acceptRate"] == 0.0


def test_the_log_reads_back_as_the_same_counts():
    t, logged = tracker()
    for i in range(5):
        sid = t.shown(URI, "line", "python", [f"s{i}"], 10.0 * i, anchor=i)
        if i % 2 == 0:
            t.accepted(sid)
    t.closed(URI)
    lines = ["2024-01-01 10:00:00,000 INFO completion line 12 ms, 1 item(s)"]
    lines += [f"2024-01-01 10:00:01,000 INFO {log_line(r)}" for r in logged]
    lines += ["garbage acceptance {not json", 'x acceptance {"outcome": "other"}']
    assert parse_line(lines[1]) == logged[0]
    read = summarize_log(lines)
    live = t.summary()
    for key in ("shown", "accepted", "partial", "dismissed", "acceptRate"):
        assert read[key] == live[key], key
    assert read["acceptedModelMs"] == {"p50": 20.0, "mean": 20.0}
    table = format_summary(read)
    assert "60.0 %" in table and "kind line" in table and "language python" in table
    json.dumps(read)  # JSON-ready


def test_items_carry_the_accept_command():
    doc = Document.open(URI, "y = \n", "python")
    items = inline_items(doc, 4, [Candidate("x"), Candidate("z")], suggestion=7)
    assert [(i.command.command, i.command.arguments) for i in items] == [
        (ACCEPTED_COMMAND, [7, 0]),
        (ACCEPTED_COMMAND, [7, 1]),
    ]
    assert inline_items(doc, 4, [Candidate("x")])[0].command is None
    (item,) = completion_items(doc, 4, [Candidate("x")], suggestion=3)
    assert item.command.arguments == [3, 0]


def test_denoising_record():
    result = InfillResult(
        ["a + b"], -0.1, 3, [[f"a {MASK}{MASK}"], ["a +" + MASK], ["a + b"]], 3, ["pad"]
    )
    made = Denoising.of(result, 10, "line", "a + b", 42.0, 5)
    assert made.steps == (f"a {MASK}{MASK}", f"a +{MASK}", "a + b")
    out = made.as_json(2, 4)
    assert out["position"] == {"line": 2, "character": 4} and out["mask"] == MASK
    assert (out["stepsUsed"], out["tokens"], out["id"], out["kind"]) == (3, 3, 5, "line")
    no_steps = InfillResult(["a"], -0.1, 1)
    assert Denoising.of(no_steps, 0, "line", "a", 1.0) is None
