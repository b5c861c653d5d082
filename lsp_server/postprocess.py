"""Post-processing of model fills (pure): each filter is one small function with golden tests.

Owns: stripping PAD/special-token residue, cutting a fill at its scope end (line end, dedent,
bracket balance), dropping fills that only repeat the suffix or the next line, dropping degenerate
repetition, the checks that tell a backend between denoising steps that the rest of a fill cannot
change the suggestion (fill_ended) or where a fill cut short may stop (whole_lines, clean_break),
extending the range over characters the editor auto-closed, and ranking candidates by
tree-sitter errors in prefix + fill + suffix against the context without the fill.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lsp_server import syntax
from lsp_server.planner import (
    _STRING_RE,
    CLOSERS,
    OPENERS,
    StopRules,
    _code_only,
    _ends_with_operator,
    indent_of,
)

SPECIAL_TOKEN_RE = re.compile(r"<\|(?:mask|pad|eos|bos|endoftext|fim_\w+)\|>|\x00")
AUTO_CLOSED = set(")]}\"'`;,")
MIN_REPEAT_UNIT = 2  # characters in a repeated unit before it counts as degenerate
MAX_UNIT_REPEATS = 3  # a unit repeated more often than this in a row is cut
UNIT_REPEAT_RE = re.compile(rf"([^\n]{{{MIN_REPEAT_UNIT},}}?)\1{{{MAX_UNIT_REPEATS},}}")


@dataclass
class Candidate:
    text: str  # the text to insert (replacing the region plus `extend` more characters)
    score: float = 0.0
    extend: int = 0  # characters after the region end replaced too (auto-closed brackets/quotes)
    errors: int = 0  # new tree-sitter errors the fill introduces


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
    return _trim_trailing(fill)


def scope_ended(fill: str, stop: StopRules, language: str = "python") -> bool:
    """Whether `fill` (a fill's text so far, from its start) already runs past its region's end:
    cut_to_scope cuts more than trailing whitespace, so whatever follows would be cut off too.
    The model backend asks this between denoising steps to stop early (Hole.ends)."""
    fill = strip_special(fill)
    return len(cut_to_scope(fill, stop, language)) < len(fill.rstrip())


def repeat_ended(fill: str) -> bool:
    """Whether `fill` (a fill's text so far) already holds degenerate repetition that
    drop_repetition cuts within it, so nothing that follows can reach the suggestion: a complete
    line (one followed by a line break: `x = f` may still grow into `x = f(y)`) that repeats the
    line before it, or a unit repeated in a row."""
    fill = strip_special(fill)
    if _repeated_line(fill.split("\n")[:-1]) is not None:  # the last piece may still grow
        return True
    # process() trims trailing whitespace (cut_to_scope) before it looks for units
    return _repeated_unit(fill.rstrip()) is not None


def fill_ended(fill: str, stop: StopRules, language: str = "python") -> bool:
    """The check a backend asks between denoising steps (Hole.ends): the fill so far already runs
    past its region (scope_ended) or into degenerate repetition (repeat_ended). Either way,
    `process` gives the same suggestion whatever the model would write next."""
    return scope_ended(fill, stop, language) or repeat_ended(fill)


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
    code = _code_only(_STRING_RE.sub(lambda m: "s" * len(m.group()), fill), language)
    depth = sum((ch in OPENERS) - (ch in CLOSERS) for ch in code)
    last = code.rstrip().rsplit("\n", 1)[-1].strip()
    asks_more = (
        last.startswith("@")
        or last.endswith((":", "="))
        or (_ends_with_operator(last, language) and not last.endswith(","))
    )
    return depth <= 0 and not any(q in code for q in "\"'`") and not asks_more


def _trim_trailing(fill: str) -> str:
    """Drop trailing whitespace and blank lines (the suffix keeps its own line breaks)."""
    if "\n" not in fill:
        return fill.rstrip(" \t")
    return fill.rstrip()


def _cut_unmatched_closer(fill: str, language: str = "python") -> str:
    depth = 0
    for i, ch in enumerate(_code_only(fill, language)):
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            if depth == 0:
                return fill[:i]
            depth -= 1
    return fill


def _cut_when_balanced(fill: str, open_count: int, language: str = "python") -> str:
    depth = open_count
    for i, ch in enumerate(_code_only(fill, language)):
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


def drop_suffix_repeat(fill: str, line_after: str, suffix: str) -> str:
    """'' when the fill only repeats the rest of the line or the next line; trailing lines that
    repeat the start of the suffix are trimmed."""
    core = fill.strip()
    if not core:
        return ""
    if line_after.strip() and core == line_after.strip():
        return ""
    rest = suffix[len(line_after) :]
    next_lines = [ln.strip() for ln in rest.split("\n") if ln.strip()]
    if next_lines and core == next_lines[0]:
        return ""
    lines = fill.split("\n")
    if len(lines) > 1 and next_lines:
        k = 0
        # the longest run of trailing fill lines equal to the first suffix lines
        for n in range(min(len(lines) - 1, len(next_lines)), 0, -1):
            if [ln.strip() for ln in lines[-n:]] == next_lines[:n]:
                k = n
                break
        if k:
            fill = _trim_trailing("\n".join(lines[:-k]))
    return fill


def drop_repetition(fill: str) -> str:
    """Cut degenerate repetition: a line repeated right after itself, or a unit repeated in a row."""
    lines = fill.split("\n")
    i = _repeated_line(lines)
    if i is not None:
        fill = "\n".join(lines[:i])
    m = _repeated_unit(fill)
    if m is not None:
        return _trim_trailing(fill[: m.start() + len(m.group(1))])
    return fill


def _repeated_line(lines: list[str]) -> int | None:
    """Index of the first non-blank line that repeats the line right before it."""
    for i in range(1, len(lines)):
        if lines[i].strip() and lines[i].strip() == lines[i - 1].strip():
            return i
    return None


def _repeated_unit(fill: str) -> re.Match | None:
    """The first unit (with a word character) repeated more than MAX_UNIT_REPEATS times in a row."""
    return next((m for m in UNIT_REPEAT_RE.finditer(fill) if re.search(r"\w", m.group(1))), None)


def absorb_autoclosed(fill: str, line_after: str) -> tuple[str, int]:
    """Extend the range over auto-closed characters right after the cursor that the fill also
    ends with, so accepting it does not duplicate a `)` or `"`. Returns (fill, extend)."""
    if "\n" in fill or not line_after:
        return fill, 0
    k = 0
    while k < len(line_after) and line_after[k] in AUTO_CLOSED:
        k += 1
    stripped = fill.rstrip()
    for n in range(k, 0, -1):
        if stripped.endswith(line_after[:n]):
            return stripped, n
    return fill, 0


def syntax_errors(
    prefix: str, fill: str, suffix: str, language: str, baseline: int | None = None
) -> int:
    """New tree-sitter errors in prefix+fill+suffix compared with prefix+suffix (0 for no grammar)."""
    if syntax.get_language(language) is None:
        return 0
    if baseline is None:
        baseline = syntax.count_errors(syntax.parse(prefix + suffix, language))
    return max(0, syntax.count_errors(syntax.parse(prefix + fill + suffix, language)) - baseline)


def process(
    fills: list[tuple[str, float]],
    stop: StopRules,
    prefix: str,
    suffix: str,
    language: str,
    require_parse: bool = False,
) -> list[Candidate]:
    """Clean, scope, filter, dedupe and rank (fill, score) candidates for one region.

    `prefix`/`suffix` are the context window around the region; the result is best first.
    With `require_parse` (a region that must be complete: a block body, a bracket's inside),
    candidates that add tree-sitter errors are dropped.
    """
    line_after = suffix.split("\n", 1)[0]
    out: dict[str, Candidate] = {}
    baseline: int | None = None
    for text, score in fills:
        fill = strip_special(text)
        fill = cut_to_scope(fill, stop, language)
        fill = drop_repetition(fill)
        fill = drop_suffix_repeat(fill, line_after, suffix)
        fill, extend = absorb_autoclosed(fill, line_after)
        if not fill.strip() or fill in out:
            continue
        if baseline is None:
            baseline = (
                syntax.count_errors(syntax.parse(prefix + suffix, language))
                if syntax.get_language(language) is not None
                else 0
            )
        errors = syntax_errors(prefix, fill, suffix[extend:], language, baseline)
        if errors and require_parse:
            continue
        out[fill] = Candidate(fill, score, extend, errors)
    return sorted(out.values(), key=lambda c: (c.errors, -c.score))
