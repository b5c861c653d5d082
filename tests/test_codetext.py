"""Golden cases for the pure text rules of code (model/codetext.py): cutting a fill to its scope,
degenerate repetition, and the checks a backend makes between denoising steps (scope, repetition,
a finished line past the deadline) with the reason each gives."""

from __future__ import annotations

import pytest

from model.codetext import (
    DEADLINE,
    REPEAT,
    SCOPE,
    clean_break,
    cut_to_scope,
    drop_repetition,
    end_reason,
    finished_fill,
    repeat_ended,
    scope_ended,
    strip_special,
    whole_lines,
)
from model.interface import StopRules

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
    why = end_reason(fill, BLOCK_BODY, "python", late=True)
    assert why == (DEADLINE if ended else None)
    assert finished_fill(fill, why or "pad") == (kept if ended else fill)
    assert end_reason(fill, BLOCK_BODY, "python", late=False) is None  # not yet
    # any rules that let a fill span lines; a single-line hole never ends by the deadline
    assert end_reason(fill, StopRules(), "python", late=True) == (DEADLINE if ended else None)
    assert end_reason("x = f(a)\ny = 1", LINE, "python", late=True) != DEADLINE


def test_the_reason_names_the_rule_that_ended_the_fill():
    assert end_reason("a, b) + c", BRACKET, "python", late=False) == SCOPE
    assert end_reason("x = f(a)\nx = f(a)\n", StopRules(), "python", late=True) == REPEAT
    assert end_reason("x = f(a)\n    y = g(", BLOCK_BODY, "python", late=False) is None
