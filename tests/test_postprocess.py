"""Golden cases for post-processing: each filter alone, then the whole `process` chain.
In the chain cases `|` marks where the fill goes in its context."""

from __future__ import annotations

import pytest

from lsp_server.postprocess import (
    absorb_autoclosed,
    drop_suffix_repeat,
    process,
    syntax_errors,
)
from model.codetext import REPEAT, SCOPE, end_reason
from model.interface import StopRules

LINE = StopRules(single_line=True)
BRACKET = StopRules(single_line=True, inside_bracket=True)
INSIDE = StopRules(inside_bracket=True)  # a bracket whose closer is on a later line


@pytest.mark.parametrize(
    "fill,line_after,suffix,expected",
    [
        (")", ")", ")\nprint(1)\n", ""),  # only repeats the rest of the line
        ("return y", "", "\n    return y\n", ""),  # only repeats the next line
        ("x = 1\nreturn y", "", "\nreturn y\n", "x = 1"),  # trailing copy of the suffix trimmed
        ("   ", "", "\n", ""),
        ("x = 1", "", "\nreturn y\n", "x = 1"),
    ],
)
def test_drop_suffix_repeat(fill, line_after, suffix, expected):
    assert drop_suffix_repeat(fill, line_after, suffix) == expected


@pytest.mark.parametrize(
    "fill,line_after,expected",
    [
        ("x)", ")", ("x)", 1)),
        ('hello")', '")', ('hello")', 2)),
        ("a, b", ")", ("a, b", 0)),
        ("x])", "])", ("x])", 2)),
        ("y)", ") + 1", ("y)", 1)),
        ("z\nw)", ")", ("z\nw)", 0)),  # multi-line fills never extend
    ],
)
def test_absorb_autoclosed(fill, line_after, expected):
    assert absorb_autoclosed(fill, line_after) == expected


def test_syntax_errors_counts_only_new_errors():
    prefix, suffix = "def f(x):\n    return ", "\n\nprint(f(1)\n"  # suffix has its own error
    assert syntax_errors(prefix, "x + 1", suffix, "python") == 0
    assert syntax_errors(prefix, "x + (1", suffix, "python") > 0
    assert syntax_errors("a = ", "]]]", "\n", "no-grammar") == 0


CHAIN = [
    # (marked context, [(fill, score)], stop, expected texts best first, expected extend of best)
    ("print(|)\n", [("value)", -1.0)], BRACKET, ["value"], 0),
    ("x = foo(|\n", [("a, b)\nmore", -1.0)], StopRules(open_brackets=1), ["a, b)"], 0),
    ('s = "|"\n', [('hello"', -1.0)], LINE, ['hello"'], 1),
    (
        "def f(x):\n    |\n\nprint(1)\n",
        [("return x\nprint(1)", -1.0)],
        StopRules(dedent_below=0),
        ["return x"],
        0,
    ),
    ("y = |\nreturn y\n", [("return y", -0.1), ("2", -2.0)], LINE, ["2"], 0),
    # ranking: the candidate that parses wins over a higher-scored one that does not
    (
        "def f(x):\n    return |\n",
        [("x + (1", -0.1), ("x + 1", -3.0)],
        LINE,
        ["x + 1", "x + (1"],
        0,
    ),
    ("z = |\n", [("1", -1.0), ("1", -0.5), ("", -0.1)], LINE, ["1"], 0),
]


def test_process_require_parse_drops_broken_fills():
    prefix, suffix = "def f(x):\n    ", "\n\nprint(f(1))\n"
    fills = [("return (x", -0.1), ("return x", -2.0)]
    assert [
        c.text for c in process(fills, StopRules(dedent_below=0), prefix, suffix, "python", True)
    ] == ["return x"]
    assert len(process(fills, StopRules(dedent_below=0), prefix, suffix, "python")) == 2


@pytest.mark.parametrize("marked,fills,stop,expected,extend", CHAIN)
def test_process_chain(marked, fills, stop, expected, extend):
    i = marked.index("|")
    prefix, suffix = marked[:i], marked[i + 1 :]
    cands = process(fills, stop, prefix, suffix, "python")
    assert [c.text for c in cands] == expected
    assert cands[0].extend == extend


@pytest.mark.parametrize(
    "fill,stop",
    [
        ('action="store",\n        action="store",\n        act', INSIDE),
        ("x = f(a)\n    x = f(a)\n", StopRules(dedent_below=0)),
        ("a, b)\n    y", StopRules(open_brackets=1)),
        ("return x\nreturn x\n", StopRules(max_lines=2)),
        ("if a.b() and a.b() and a.b() and a.b() and a", StopRules(dedent_below=0)),
    ],
)
def test_an_ended_fill_gets_the_same_suggestion_whatever_follows(fill, stop):
    """What `end_reason` promises the backend when it ends a fill by SCOPE or REPEAT: process()
    of the text so far equals process() of any continuation, so stopping the denoiser there
    changes nothing the user sees."""
    assert end_reason(fill, stop, "python", late=False) in (SCOPE, REPEAT)
    prefix, suffix = "def f(a):\n    ", "\n\nprint(1)\n"
    want = [c.text for c in process([(fill, 0.0)], stop, prefix, suffix, "python")]
    for more in ("ion=1)\n", " more\n    text", "\n", ")\n)", 'ion="store",\n' * 3):
        got = process([(fill + more, 0.0)], stop, prefix, suffix, "python")
        assert [c.text for c in got] == want
