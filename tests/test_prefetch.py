"""prefetch.py: the line after Enter, as an editor's auto-indent makes it (golden cases)."""

from __future__ import annotations

import pytest

from lsp_server.prefetch import after_enter, enter_indent


@pytest.mark.parametrize(
    ("line", "language", "indent"),
    [
        ("    x = 1", "python", "    "),
        ("    def f(self):", "python", "        "),
        ("    if ok:  # a comment", "python", "        "),
        ("    items = [", "python", "        "),
        ("        return x", "python", "    "),
        ("        pass", "python", "    "),
        ("        returned = 1", "python", "        "),  # a name, not the keyword
        ("return x", "python", ""),  # nothing to dedent
        ("  if (ok) {", "javascript", "    "),
        ("  const x = f(", "javascript", "    "),
        ("  return x;", "javascript", "  "),  # no dedent rule for brace languages
    ],
)
def test_enter_indent(line, language, indent):
    text = "def g():\n    y = 2\n" if language == "python" else "function g() {\n  y();\n}\n"
    assert enter_indent(line, text, language) == indent


def test_after_enter_takes_the_suggestion_and_breaks_the_line():
    text = "def f(x):\n    y = x\n\nprint(1)\n"
    cursor = text.index("x\n\n") + 1  # end of "    y = x"
    assert after_enter(text, cursor, " + 1", "python") == " + 1\n    "
    assert after_enter("class A:", 8, "", "python") == "\n    "  # a header typed to its end


@pytest.mark.parametrize(
    ("text", "cursor", "suggestion"),
    [
        ("x = f(1)\n", 6, "2, "),  # mid-line: Enter would split the line
        ("x = \n", 4, "1\ny = 2"),  # a multi-line suggestion
        ("def f():\n    \n", 13, ""),  # a blank line
    ],
)
def test_after_enter_declines(text, cursor, suggestion):
    assert after_enter(text, cursor, suggestion, "python") is None
