"""Where the next request will likely come from, so its fill can start before it arrives (pure).

Owns the guess of the editor's next state after a suggestion at the end of a line: the user takes
the suggestion (by Tab or by typing it through) and presses Enter, and the editor's auto-indent
puts the cursor on a new line. The server fills that place in the background (the engine's
speculative job, which any real request cancels, or adopts when it is this very fill), so the
suggestion for the new line is ready, or partly done, when Enter arrives; llama.vim's speculative
FIM does the same for the accepted suggestion itself.

The indentation follows the common auto-indent rules (VS Code's and Neovim's for Python and the
brace languages): one unit more after a block header or a line ending in an opener, one less
after Python's return/pass/raise/break/continue, else the line's own. A wrong guess costs only the
background fill: the real request then plans its own.
"""

from __future__ import annotations

import re

from lsp_server.planner import indent_unit
from model.codetext import OPENERS, indent_of, is_header, strip_comment

PY_DEDENT = re.compile(r"\s*(return|pass|raise|break|continue)\b")


def enter_indent(line: str, text: str, language: str) -> str:
    """The indentation an editor gives the new line when Enter is pressed at the end of `line`."""
    base = line[: indent_of(line)]
    code = strip_comment(line, language).rstrip()
    unit = indent_unit(text, language)
    if is_header(line, language) or code.endswith(tuple(OPENERS)):
        return base + unit
    if language == "python" and PY_DEDENT.match(code) and base.endswith(unit):
        return base[: len(base) - len(unit)]
    return base


def after_enter(text: str, cursor: int, suggestion: str, language: str) -> str | None:
    """What the editor inserts at `cursor` when `suggestion` is taken there and Enter pressed
    after it (the new line's cursor is at the end of it), or None when that is not a likely next
    step: the cursor is not at its line's end, the suggestion spans lines, or the line would be
    blank."""
    line_start = text.rfind("\n", 0, cursor) + 1
    line_end = text.find("\n", cursor)
    line_end = len(text) if line_end < 0 else line_end
    if cursor != line_end or "\n" in suggestion:
        return None
    line = text[line_start:cursor] + suggestion
    if not line.strip():
        return None
    return suggestion + "\n" + enter_indent(line, text, language)
