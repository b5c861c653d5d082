"""Golden cases for post-processing: each filter alone, then the whole `process` chain.
In the chain cases `|` marks where the fill goes in its context."""

from __future__ import annotations

import pytest

from lsp_server.planner import StopRules
from lsp_server.postprocess import (
    absorb_autoclosed,
    clean_break,
    cut_to_scope,
    drop_repetition,
    drop_suffix_repeat,
    fill_ended,
    process,
    repeat_ended,
    scope_ended,
    strip_special,
    syntax_errors,
    whole_lines,
)

LINE = StopRules(single_line=True)
BRACKET = StopRules(single_line=True, inside_bracket=True)


@pytest.mark.parametrize(
    "fill,stop,expected",
    [
        ("x + 1\ny = 2", LINE, "x + 1"),
        ("x + 1   ", LINE, "x + 1"),
        ("a, b) + c", BRACKET, "a, b"),
        ("f(a), g(b)) and more", BRACKET, "f(a), g(b)"),
        ("')' + s)", BRACKET, "')' + s"),  # a bracket inside a string does not count
        ("2,\n    3)\nprint(x)", StopRules(open_brackets=1), "2,\n    3)"),
        ("a, [1,\n 2]),\nnext", StopRules(open_brackets=1), "a, [1,\n 2]),"),
        ("y = x\n    return y\nprint(1)", StopRules(dedent_below=0), "y = x\n    return y"),
        ("\n    return 1\n\ndef g():", StopRules(dedent_below=0), "\n    return 1"),
        ("if a:\n        b()\n    c()\nd()", StopRules(dedent_below=4), "if a:\n        b()"),
        ("one\ntwo\nthree", StopRules(max_lines=2), "one\ntwo"),
        ("return x;\n}\nfoo();", StopRules(inside_bracket=True), "return x;"),
        ("y\n\n\n", StopRules(), "y"),
    ],
)
def test_cut_to_scope(fill, stop, expected):
    assert cut_to_scope(fill, stop) == expected


def test_strip_special():
    assert strip_special("x<|pad|><|pad|>") == "x"
    assert strip_special("a<|mask|>b<|eos|>") == "ab"
    assert strip_special("s = '<|fill|>'") == "s = '<|fill|>'"  # not a model token


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
    "fill,expected",
    [
        ("foo\nfoo\nfoo", "foo"),
        ("x = 1\nx = 1", "x = 1"),
        ("self.self.self.self.self.x", "self."),
        ("# ------------------", "# ------------------"),  # no word characters: fine
        ("a = [0, 0, 0]", "a = [0, 0, 0]"),
        ("return a + b", "return a + b"),
    ],
)
def test_drop_repetition(fill, expected):
    assert drop_repetition(fill) == expected


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
    "fill,stop,ended",
    [
        ("x + 1", LINE, False),
        ("x + 1\n", LINE, False),  # only trailing whitespace would be cut
        ("x + 1\ny", LINE, True),
        ("a, b", StopRules(open_brackets=1), False),
        ("a, b)", StopRules(open_brackets=1), False),  # the line may go on: `).strip()`
        ("a, b)\n", StopRules(open_brackets=1), False),
        ("a, b)\n    x", StopRules(open_brackets=1), True),
        ("a, ')'\n    x", StopRules(open_brackets=1), False),  # a closer in a string
        ("x = 1\n        y", StopRules(dedent_below=4), False),
        ("x = 1\n    def", StopRules(dedent_below=4), True),
        ("x = 1\n    ", StopRules(dedent_below=4), False),  # no code on the new line yet
        ("a, b) + c", BRACKET, True),
    ],
)
def test_scope_ended_once_the_cut_falls_inside_the_text(fill, stop, ended):
    assert scope_ended(fill, stop) is ended
    if ended:  # and what follows cannot move the cut: the same cut with more text after it
        assert cut_to_scope(fill + " more\n   text", stop) == cut_to_scope(fill, stop)


INSIDE = StopRules(inside_bracket=True)  # a bracket whose closer is on a later line


@pytest.mark.parametrize(
    "fill,ended",
    [
        ('action="store",\n        action="store",\n', True),
        ('action="store",\n        action="store",', False),  # the line may still grow
        ('action="store",\n        action="store_true",\n', False),
        ("*,\n    *,\n    *", True),
        ("x = 1\n\n\ny = 2\n", False),  # blank lines are no repetition
        ("x = 1\ny = 2\nx = 1\n", False),  # only a line right after itself
        ("a<|pad|>\na\n", True),  # special-token residue is stripped first
        ("if x.y() and x.y() and x.y() and x.y() and", True),  # a unit repeated in a row
        ("if x.y() and x.y() and x.y() and", False),
        ("    ----------", False),  # no word character in the unit
        ("x and x and x and x and ", False),  # trimmed first, as process() does: 3 repeats
    ],
)
def test_repeat_ended_once_a_complete_line_repeats(fill, ended):
    assert repeat_ended(fill) is ended


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
    """What `fill_ended` promises the backend: process() of the text so far equals process() of
    any continuation, so stopping the denoiser there changes nothing the user sees."""
    assert fill_ended(fill, stop)
    prefix, suffix = "def f(a):\n    ", "\n\nprint(1)\n"
    want = [c.text for c in process([(fill, 0.0)], stop, prefix, suffix, "python")]
    for more in ("ion=1)\n", " more\n    text", "\n", ")\n)", 'ion="store",\n' * 3):
        got = process([(fill + more, 0.0)], stop, prefix, suffix, "python")
        assert [c.text for c in got] == want


@pytest.mark.parametrize(
    "fill,expected",
    [
        ("x = 1\n    y = f(", "x = 1"),
        ("x = 1\n", "x = 1"),
        ("x = 1", ""),  # no line finished yet
        ("\n    ", ""),
        ("a,\n    b,\n    c", "a,\n    b,"),
    ],
)
def test_whole_lines_keeps_the_finished_lines(fill, expected):
    assert whole_lines(fill) == expected


@pytest.mark.parametrize(
    "fill,clean",
    [
        ("x = f(a)", True),
        ("port=self.port,", True),
        ("x = f(a,", False),  # a bracket left open
        ("for x in y:", False),  # a header with no body
        ("y = 1 + \\", False),
        ("s = ':' # (", True),  # brackets and colons in strings and comments do not count
        ("if (x) {", False),
        ('"""Return the files under root.', False),  # a docstring still open
        ("const s = `first line", False),  # a template literal still open
        ("total = a +", False),  # a trailing operator
        ("x = f(a) and", False),
        ("command = run()", True),  # `and` only as a word
        ("@property", False),  # a decorator: its function follows
        ("x =", False),
    ],
)
def test_clean_break_when_nothing_is_left_open(fill, clean):
    language = "javascript" if "{" in fill else "python"
    assert clean_break(fill, language) is clean
