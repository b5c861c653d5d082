"""Pure text rules of code, shared by the server and the model backends (no I/O, no torch).

Owns: brackets, strings and comments blanked (`code_only`), indentation, block headers and
trailing operators; where a fill ends by its hole's stop rules (`cut_to_scope`), degenerate
repetition (`drop_repetition`), special-token residue (`strip_special`); and the check a backend
makes between denoising steps (`end_reason`): whether the fill so far has run past its scope or
into repetition, so that the rest cannot change the suggestion, or, past the request's deadline,
whether it may stop at its last finished line (`whole_lines`, `clean_break`).

The server's planner writes the stop rules (model/interface.py `StopRules`) and its
post-processing cuts by them; the backend reads the same rules, so a request stays plain data.
"""

from __future__ import annotations

import re

from model.interface import StopRules

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
BRACE_LANGUAGES = {"javascript", "typescript", "tsx", "go", "rust", "c", "cpp", "java"}
TRAILING_OPERATORS = ("\\", "+", "-", "*", "/", "%", "&&", "||", "and", "or", "not", "?", ",")
STRING_RE = re.compile(
    r"'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\"|`[^`]*`", re.DOTALL
)
SPECIAL_TOKEN_RE = re.compile(r"<\|(?:mask|pad|eos|bos|endoftext|fim_\w+)\|>|\x00")
MIN_REPEAT_UNIT = 2  # characters in a repeated unit before it counts as degenerate
MAX_UNIT_REPEATS = 3  # a unit repeated more often than this in a row is cut
UNIT_REPEAT_RE = re.compile(rf"([^\n]{{{MIN_REPEAT_UNIT},}}?)\1{{{MAX_UNIT_REPEATS},}}")
# why a fill ended (model/interface.py InfillResult.ended_by)
BUDGET, PAD, SCOPE, REPEAT, DEADLINE = "budget", "pad", "scope", "repeat", "deadline"


# ---- lines, comments, brackets ---------------------------------------------------------------
def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def comment_marker(language: str) -> str:
    return "#" if language == "python" else "//"


def strip_comment(line: str, language: str) -> str:
    marker = comment_marker(language)
    i = line.find(marker)
    return line[:i] if i >= 0 and line.count('"', 0, i) % 2 == 0 else line


def code_only(chunk: str, language: str) -> str:
    """Blank out string literals and comments so brackets inside them are not counted."""
    chunk = STRING_RE.sub(lambda m: " " * len(m.group()), chunk)
    marker = comment_marker(language)
    return re.sub(re.escape(marker) + r"[^\n]*", lambda m: " " * len(m.group()), chunk)


def is_header(line: str, language: str) -> bool:
    """A line that opens a block: `...:` in Python, `...{` in brace languages."""
    code = strip_comment(line, language).rstrip()
    if language in BRACE_LANGUAGES:
        return code.endswith("{")
    return code.endswith(":") and not code.lstrip().startswith(("#", "lambda"))


def ends_with_operator(line: str, language: str) -> bool:
    """A line whose statement goes on: it ends with a binary operator or a continuation."""
    code = strip_comment(line, language).rstrip()
    if not code or code.endswith(("==", "!=", "<=", ">=", "->", "=>", "++", "--")):
        return code.endswith("\\")
    return any(
        code.endswith(op) and (not op.isalpha() or code[: -len(op)].endswith((" ", "\t")))
        for op in TRAILING_OPERATORS
    )


# ---- where a fill ends ------------------------------------------------------------------------
def strip_special(fill: str) -> str:
    """Remove PAD/MASK/EOS residue a backend may leave in the text."""
    return SPECIAL_TOKEN_RE.sub("", fill)


def cut_to_scope(fill: str, stop: StopRules, language: str = "python") -> str:
    """Cut a fill where its region ends according to the plan's stop rules."""
    if stop.single_line:
        fill = fill.split("\n", 1)[0]
    if stop.inside_bracket:
        fill = _cut_unmatched_closer(fill, language)
    if stop.open_brackets:
        fill = _cut_when_balanced(fill, stop.open_brackets, language)
    if stop.dedent_below is not None:
        fill = _cut_at_dedent(fill, stop.dedent_below)
    if stop.max_lines is not None:
        fill = "\n".join(fill.split("\n")[: stop.max_lines])
    return trim_trailing(fill)


def trim_trailing(fill: str) -> str:
    """Drop trailing whitespace and blank lines (the suffix keeps its own line breaks)."""
    if "\n" not in fill:
        return fill.rstrip(" \t")
    return fill.rstrip()


def _cut_unmatched_closer(fill: str, language: str = "python") -> str:
    depth = 0
    for i, ch in enumerate(code_only(fill, language)):
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            if depth == 0:
                return fill[:i]
            depth -= 1
    return fill


def _cut_when_balanced(fill: str, open_count: int, language: str = "python") -> str:
    depth = open_count
    for i, ch in enumerate(code_only(fill, language)):
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth -= 1
            if depth <= 0:
                nl = fill.find("\n", i)
                return fill if nl < 0 else fill[:nl]
    return fill


def _cut_at_dedent(fill: str, indent: int) -> str:
    lines = fill.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() and indent_of(line) <= indent:
            return "\n".join(lines[:i])
    return fill


def drop_repetition(fill: str) -> str:
    """Cut degenerate repetition: a line repeated right after itself, or a unit repeated in a row."""
    lines = fill.split("\n")
    i = repeated_line(lines)
    if i is not None:
        fill = "\n".join(lines[:i])
    m = repeated_unit(fill)
    if m is not None:
        return trim_trailing(fill[: m.start() + len(m.group(1))])
    return fill


def repeated_line(lines: list[str]) -> int | None:
    """Index of the first non-blank line that repeats the line right before it."""
    for i in range(1, len(lines)):
        if lines[i].strip() and lines[i].strip() == lines[i - 1].strip():
            return i
    return None


def repeated_unit(fill: str) -> re.Match | None:
    """The first unit (with a word character) repeated more than MAX_UNIT_REPEATS times in a row."""
    return next((m for m in UNIT_REPEAT_RE.finditer(fill) if re.search(r"\w", m.group(1))), None)


# ---- the backend's check between denoising steps ----------------------------------------------
def scope_ended(fill: str, stop: StopRules, language: str = "python") -> bool:
    """Whether `fill` (a fill's text so far, from its start) already runs past its region's end:
    cut_to_scope cuts more than trailing whitespace, so whatever follows would be cut off too."""
    fill = strip_special(fill)
    return len(cut_to_scope(fill, stop, language)) < len(fill.rstrip())


def repeat_ended(fill: str) -> bool:
    """Whether `fill` (a fill's text so far) already holds degenerate repetition that
    drop_repetition cuts within it, so nothing that follows can reach the suggestion: a complete
    line (one followed by a line break: `x = f` may still grow into `x = f(y)`) that repeats the
    line before it, or a unit repeated in a row."""
    fill = strip_special(fill)
    if repeated_line(fill.split("\n")[:-1]) is not None:  # the last piece may still grow
        return True
    # post-processing trims trailing whitespace (cut_to_scope) before it looks for units
    return repeated_unit(fill.rstrip()) is not None


def whole_lines(fill: str) -> str:
    """The complete lines of a fill cut short (those followed by a line break): '' when none
    holds code yet. A line the model was still writing is no suggestion."""
    head = fill[: fill.rfind("\n") + 1]
    return head.rstrip() if head.strip() else ""


def clean_break(fill: str, language: str = "python") -> bool:
    """Whether a fill may stop after its last line: no bracket or string left open (a quote
    that survives blanking the complete strings opens one: a docstring's first line) and no last
    line that asks for more (a block header's `:`, a decorator, a trailing operator or `=`; a
    trailing comma is fine: arguments one per line)."""
    # complete strings become a word (so `x = ""` still ends in an operand), comments blanks
    code = code_only(STRING_RE.sub(lambda m: "s" * len(m.group()), fill), language)
    depth = sum((ch in OPENERS) - (ch in CLOSERS) for ch in code)
    last = code.rstrip().rsplit("\n", 1)[-1].strip()
    asks_more = (
        last.startswith("@")
        or last.endswith((":", "="))
        or (ends_with_operator(last, language) and not last.endswith(","))
    )
    return depth <= 0 and not any(q in code for q in "\"'`") and not asks_more


def end_reason(fill: str, stop: StopRules, language: str, late: bool) -> str | None:
    """Why a hole's fill so far (decoded up to its first masked slot) is over, or None: SCOPE
    (it ran past its region), REPEAT (into degenerate repetition), or DEADLINE (`late`: the
    request's deadline has passed, the hole may span lines, and its last finished line leaves
    nothing open; the suggestion is then its finished lines, `whole_lines`)."""
    if scope_ended(fill, stop, language):
        return SCOPE
    if repeat_ended(fill):
        return REPEAT
    if not late or stop.single_line:
        return None
    head = whole_lines(fill)
    return DEADLINE if head and clean_break(head, language) else None


def finished_fill(fill: str, ended_by: str) -> str:
    """The fill as the suggestion starts from: its finished lines if the deadline ended it."""
    return whole_lines(fill) if ended_by == DEADLINE else fill
