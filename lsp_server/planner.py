"""Infill planning (pure): from text, tree and cursor (or holes) decide what to fill.

Owns the choice of region kind at a cursor (rest of line, open statement, block body, inside a
bracket, an explicit selection, several holes), each region's mask budget and stop rules, and the
prefix/suffix context window, cut at syntactic boundaries (whole functions/classes) within a token
budget. No I/O and no model: the engine turns an `InfillPlan` into an `InfillRequest`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from model.codetext import (
    BRACE_LANGUAGES,
    CLOSERS,
    OPENERS,
    code_only,
    ends_with_operator,
    indent_of,
    is_header,
)
from model.interface import Hole, Segment, StopRules

LINE, STATEMENT, BLOCK, BRACKET, SELECTION, HOLE = (
    "line",
    "statement",
    "block",
    "bracket",
    "selection",
    "hole",
)
MIN_CONTEXT_TOKENS = 64  # never plan less context than this
SCAN_LINES = 60
SCAN_CHARS = 16_000  # at most this many characters of those lines (60 lines of code: ~3,000)
SCAN_INDENT_LINES = 2000  # lines looked at to find the indentation step
DEFAULT_INDENT = {
    "javascript": "  ",
    "typescript": "  ",
    "tsx": "  ",
    "go": "\t",
}  # lines scanned around the cursor for bracket balance


@dataclass(frozen=True)
class Budgets:
    """Mask budgets (tokens) per region kind and the context budget around them."""

    line: int = 24
    statement: int = 48
    block: int = 96
    bracket: int = 24
    hole: int = 32
    selection_max: int = 256
    context_tokens: int = 400  # prefix + holes + suffix (the model window is 512)
    suffix_share: float = 0.25  # fraction of the context budget given to the suffix
    chars_per_token: float = 3.0  # estimate (on the low side) used to size the window


@dataclass(frozen=True)
class Region:
    kind: str
    start: int  # character offsets into the (normalised) text
    end: int  # == start for an insertion, > start when the region replaces text
    budget: int
    stop: StopRules = field(default_factory=StopRules)
    lead: str = ""  # inserted before the fill (the model sees it as context), e.g. "\n    "
    trail: str = ""  # inserted after the fill, e.g. the line break before an auto-closed `}`


@dataclass(frozen=True)
class InfillPlan:
    language: str
    regions: tuple[Region, ...]
    context_start: int
    context_end: int
    # text read ahead of the prefix (the repository context: lsp_server/context/), not the file's
    header: str = ""

    @property
    def kind(self) -> str:
        return self.regions[0].kind if len(self.regions) == 1 else HOLE

    def segments(self, text: str, min_tokens: int = 0) -> list[Segment]:
        """[prefix, Hole, middle, Hole, ..., suffix] over the context window; each hole holds
        at least `min_tokens` tokens (an explicit request wants something, not an empty fill)."""
        segs: list[Segment] = []
        pos = self.context_start
        trail = self.header
        for r in self.regions:
            segs.append(trail + text[pos : r.start] + r.lead)
            segs.append(Hole(r.budget, min(min_tokens, r.budget), r.stop.single_line, r.stop))
            pos, trail = r.end, r.trail
        segs.append(trail + text[pos : self.context_end])
        return segs

    def prefix(self, text: str) -> str:
        return text[self.context_start : self.regions[0].start]

    def suffix(self, text: str) -> str:
        return text[self.regions[-1].end : self.context_end]


# ---------------------------------------------------------------------------------------------
# text helpers


def _line_bounds(text: str, offset: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return start, len(text) if end < 0 else end


def _neighbour_line(text: str, offset: int, step: int) -> str | None:
    """The nearest non-blank line before (step=-1) or after (step=1) the line holding offset."""
    start, end = _line_bounds(text, offset)
    while True:
        if step < 0:
            if start == 0:
                return None
            end = start - 1
            start = text.rfind("\n", 0, end) + 1
        else:
            if end >= len(text):
                return None
            start = end + 1
            nxt = text.find("\n", start)
            end = len(text) if nxt < 0 else nxt
        line = text[start:end]
        if line.strip():
            return line


def open_brackets(prefix: str, language: str) -> list[str]:
    """Openers still unmatched at the end of `prefix` (innermost last)."""
    stack: list[str] = []
    for ch in code_only(prefix, language):
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if stack and stack[-1] == CLOSERS[ch]:
                stack.pop()
            else:
                stack.clear()  # a closer of an earlier statement: start over
    return stack


def closers_ahead(suffix: str, language: str) -> list[tuple[str, int]]:
    """Closing brackets in `suffix` that have no opener after the cursor, with their offsets."""
    depth: list[str] = []
    out: list[tuple[str, int]] = []
    for i, ch in enumerate(code_only(suffix, language)):
        if ch in OPENERS:
            depth.append(ch)
        elif ch in CLOSERS:
            if depth:
                depth.pop()
            else:
                out.append((ch, i))
    return out


def _window(text: str, offset: int, lines: int, before: bool) -> str:
    """Up to `lines` lines before (or after) `offset`, at most SCAN_CHARS characters of them
    (a 1 MB line is not scanned whole)."""
    if before:
        lo = max(0, offset - SCAN_CHARS)
        pos = offset
        for _ in range(lines):
            pos = text.rfind("\n", lo, pos)
            if pos < 0:
                return text[lo:offset]
        return text[pos + 1 : offset]
    hi = min(len(text), offset + SCAN_CHARS)
    pos = offset
    for _ in range(lines):
        pos = text.find("\n", pos + 1, hi)
        if pos < 0:
            return text[offset:hi]
    return text[offset:pos]


def indent_unit(text: str, language: str) -> str:
    """The document's indentation step (first indented line after a shallower one)."""
    prev = 0
    for i, line in enumerate(text.split("\n")):
        if i > SCAN_INDENT_LINES:
            break
        if not line.strip():
            continue
        ind = indent_of(line)
        if ind > prev:
            step = line[prev:ind]
            return "\t" if "\t" in step else " " * (ind - prev)
        prev = ind
    return DEFAULT_INDENT.get(language, "    ")


def _in_string_or_comment(tree: Any | None, byte: int) -> bool:
    if tree is None:
        return False
    node = tree.root_node.descendant_for_byte_range(max(0, byte - 1), max(0, byte - 1))
    while node is not None:
        if node.type in ("comment", "line_comment", "block_comment", "string_content"):
            return node.end_byte >= byte
        node = node.parent
    return False


# ---------------------------------------------------------------------------------------------
# region choice


def choose_region(
    text: str,
    cursor: int,
    language: str,
    tree: Any | None = None,
    budgets: Budgets = Budgets(),
    selection: tuple[int, int] | None = None,
    cursor_byte: int | None = None,
) -> Region:
    """The region to fill at `cursor` (or the explicit `selection`)."""
    if selection is not None and selection[1] > selection[0]:
        s, e = selection
        chars = e - s
        budget = min(
            budgets.selection_max, max(budgets.line, int(chars / budgets.chars_per_token * 1.5) + 8)
        )
        single = "\n" not in text[s:e]
        return Region(SELECTION, s, e, budget, StopRules(single_line=single))

    line_start, line_end = _line_bounds(text, cursor)
    before = text[line_start:cursor]
    after = text[cursor:line_end]
    single = StopRules(single_line=True)

    byte = cursor if cursor_byte is None else cursor_byte
    if _in_string_or_comment(tree, byte):
        return Region(LINE, cursor, cursor, budgets.line, single)

    stack = open_brackets(_window(text, cursor, SCAN_LINES, before=True), language)
    ahead = closers_ahead(_window(text, cursor, SCAN_LINES, before=False), language)
    prev_line = _neighbour_line(text, cursor, -1)
    next_line = _neighbour_line(text, cursor, 1)
    brace = language in BRACE_LANGUAGES

    if stack and ahead and ahead[0][0] == OPENERS[stack[-1]]:
        closer_same_line = ahead[0][1] <= len(after)
        if stack[-1] == "{" and brace:
            if before.rstrip().endswith("{") and (not after.strip() or after.lstrip()[0] == "}"):
                # `{|}` just typed: the body goes on its own lines
                base = before[: indent_of(before)]
                unit = indent_unit(text, language)
                trail = "\n" + base if after.strip() else ""
                stop = StopRules(inside_bracket=True, dedent_below=len(base))
                return Region(BLOCK, cursor, cursor, budgets.block, stop, "\n" + base + unit, trail)
            header = prev_line is not None and is_header(prev_line, language)
            if not before.strip() and not after.strip() and header:
                stop = StopRules(inside_bracket=True, dedent_below=indent_of(prev_line))
                return Region(BLOCK, cursor, cursor, budgets.block, stop)
            if not closer_same_line:
                stack = []  # inside a block body: the rules for lines below apply
        # mid-line inside a bracket that closes on a later line (an argument being typed):
        # the rest of this line, as anywhere else mid-line; the dev set (bench/results/
        # dev_midline_bracket.json) gives the line rule the same exact match in half the passes
        mid_line = before.strip() and not before.rstrip().endswith(tuple(OPENERS))
        if stack and (closer_same_line or mid_line):
            stop = StopRules(single_line=True, inside_bracket=True)
            return Region(BRACKET, cursor, cursor, budgets.bracket, stop)
        if stack:
            return Region(
                BRACKET, cursor, cursor, budgets.statement, StopRules(inside_bracket=True)
            )

    if brace and stack == ["{"] and before.rstrip().endswith("{") and not after.strip():
        base = before[: indent_of(before)]  # `{|` with no closer yet: body and closing brace
        stop = StopRules(open_brackets=1)
        lead = "\n" + base + indent_unit(text, language)
        return Region(BLOCK, cursor, cursor, budgets.block, stop, lead)

    if stack and not after.strip():
        return Region(
            STATEMENT, cursor, cursor, budgets.statement, StopRules(open_brackets=len(stack))
        )

    if not after.strip() and is_header(before, language) and not brace:
        header_indent = indent_of(before)
        if next_line is None or indent_of(next_line) <= header_indent:
            lead = "\n" + before[:header_indent] + indent_unit(text, language)
            stop = StopRules(dedent_below=header_indent)
            return Region(BLOCK, cursor, cursor, budgets.block, stop, lead)

    if not before.strip() and not after.strip() and prev_line is not None:
        if is_header(prev_line, language) and not brace:
            header_indent = indent_of(prev_line)
            if next_line is None or indent_of(next_line) <= header_indent:
                return Region(
                    BLOCK, cursor, cursor, budgets.block, StopRules(dedent_below=header_indent)
                )
        if ends_with_operator(prev_line, language):
            return Region(STATEMENT, cursor, cursor, budgets.line, StopRules(max_lines=1))

    if not after.strip() and before.strip() and ends_with_operator(before, language):
        return Region(STATEMENT, cursor, cursor, budgets.line, StopRules(max_lines=2))

    return Region(LINE, cursor, cursor, budgets.line, single)


# ---------------------------------------------------------------------------------------------
# context window


def _children_within(node: Any, lo: int, hi: int):
    """The children of `node` that reach past byte `lo` and start by byte `hi`, found with the
    tree's cursor rather than by listing them all (a 1 MB one-line list has 200,000)."""
    cursor = node.walk()
    if cursor.goto_first_child_for_byte(max(0, lo - 1)) is None:
        return
    while cursor.node.start_byte <= hi:
        yield cursor.node
        if not cursor.goto_next_sibling():
            return


def _syntactic_starts(tree: Any, byte: int, lo: int = 0) -> list[int]:
    """Byte starts in [lo, byte] of the children of every ancestor of the node at `byte`
    (whole constructs)."""
    out: list[int] = []
    node = tree.root_node.descendant_for_byte_range(byte, byte)
    while node is not None:
        for child in _children_within(node, lo, byte):
            if lo <= child.start_byte <= byte:
                out.append(child.start_byte)
        node = node.parent
    return out


def _syntactic_ends(tree: Any, byte: int, hi: int | None = None) -> list[int]:
    """Byte ends in [byte, hi] of the children of every ancestor of the node at `byte`."""
    out: list[int] = []
    node = tree.root_node.descendant_for_byte_range(byte, byte)
    while node is not None:
        for child in _children_within(node, byte, byte if hi is None else hi):
            if child.end_byte >= byte and (hi is None or child.end_byte <= hi):
                out.append(child.end_byte)
        node = node.parent
    return out


def _blank_before(text: str, s: int) -> bool:
    """Whether only spaces and tabs stand between the start of its line and offset `s` (> 0)."""
    j = s
    while j > 0 and text[j - 1] in " \t":
        j -= 1
    return j > 0 and text[j - 1] == "\n"


def context_window(
    text: str,
    first: int,
    last: int,
    snapshot: Any | None = None,
    budgets: Budgets = Budgets(),
) -> tuple[int, int]:
    """(start, end) of the context around [first, last], cut at whole constructs within budget.

    `snapshot` (syntax.Snapshot) provides the tree and byte <-> char conversion; without it the
    window is cut at top-level lines (indentation 0) and then at any line start. Whatever the
    lines' lengths, it holds at most the budget's characters on either side (`max_context_chars`
    in all): a line longer than that (a 1 MB one-line file) is cut around [first, last].
    """
    total = budgets.context_tokens * budgets.chars_per_token
    suffix_chars = int(total * budgets.suffix_share)
    prefix_chars = int(total) - suffix_chars
    if len(text) - (last - first) <= total:
        return 0, len(text)
    suffix_room = max(0, len(text) - last)
    if suffix_room < suffix_chars:  # give the unused suffix budget to the prefix
        prefix_chars += suffix_chars - suffix_room
    prefix_room = first
    if prefix_room < prefix_chars:
        suffix_chars += prefix_chars - prefix_room

    first_line = text.rfind("\n", 0, first) + 1
    min_start = max(0, first - prefix_chars)
    last_line_end = text.find("\n", last)
    last_line_end = len(text) if last_line_end < 0 else last_line_end
    max_end = min(len(text), last + suffix_chars)

    start = end = None
    tree = getattr(snapshot, "tree", None)
    if tree is not None:
        byte_first, byte_min = snapshot.byte_offset(first), snapshot.byte_offset(min_start)
        starts = [snapshot.char_offset(b) for b in _syntactic_starts(tree, byte_first, byte_min)]
        ok = [
            s
            for s in starts
            if min_start <= s <= first_line
            and (s == 0 or text[s - 1] == "\n" or _blank_before(text, s))
        ]
        if ok:
            start = text.rfind("\n", 0, min(ok)) + 1
        byte_last, byte_max = snapshot.byte_offset(last), snapshot.byte_offset(max_end)
        ends = [snapshot.char_offset(b) for b in _syntactic_ends(tree, byte_last, byte_max)]
        ok = [e for e in ends if last_line_end <= e <= max_end]
        if ok:
            e = max(ok)
            nl = text.find("\n", e)
            end = len(text) if nl < 0 else min(nl + 1, len(text))
            if end > max_end:
                end = e
    if start is None:
        start = _line_cut_start(text, min_start, first_line)
    if end is None:
        end = _line_cut_end(text, max_end, last_line_end)
    reach = int(total)  # a long line is cut around the region, not taken whole
    return max(start, first - reach), min(max(end, last_line_end), last + reach)


def max_context_chars(budgets: Budgets) -> int:
    """The most characters of context a plan's window holds around its regions (the window's
    budget on either side: ~2,400 characters at the default 400 tokens)."""
    return 2 * int(budgets.context_tokens * budgets.chars_per_token)


def _line_cut_start(text: str, min_start: int, first_line: int) -> int:
    """Earliest top-level line start in [min_start, first_line], else the first line start."""
    pos = (
        min_start
        if min_start == 0 or text[min_start - 1] == "\n"
        else text.find("\n", min_start) + 1
    )
    if pos <= 0 and min_start > 0:
        return first_line
    candidate = pos
    while 0 <= candidate <= first_line:
        if candidate < len(text) and text[candidate] not in " \t\n":
            return candidate
        nl = text.find("\n", candidate)
        if nl < 0:
            break
        candidate = nl + 1
    return min(pos, first_line)


def _line_cut_end(text: str, max_end: int, last_line_end: int) -> int:
    """Latest line end <= max_end (at least the end of the last region's line)."""
    nl = text.rfind("\n", last_line_end, max_end + 1)
    return nl + 1 if nl >= last_line_end else last_line_end


# ---------------------------------------------------------------------------------------------
# entry points


def _minus(budgets: Budgets, regions: list[Region]) -> Budgets:
    """The context budget left once the holes' mask tokens are placed in the window."""
    left = max(MIN_CONTEXT_TOKENS, budgets.context_tokens - sum(r.budget for r in regions))
    return replace(budgets, context_tokens=left)


def with_budget(plan: InfillPlan, budget: int | None, replacing: int | None = None) -> InfillPlan:
    """`plan` with `budget` mask tokens per hole (None: unchanged); with `replacing`, only the
    holes whose budget is that (the default: holes that name their own keep it)."""
    if not budget:
        return plan
    regions = tuple(
        replace(r, budget=budget) if replacing is None or r.budget == replacing else r
        for r in plan.regions
    )
    return replace(plan, regions=regions)


def plan_completion(
    text: str,
    cursor: int,
    language: str,
    snapshot: Any | None = None,
    budgets: Budgets = Budgets(),
    selection: tuple[int, int] | None = None,
) -> InfillPlan:
    """Plan an infill at a cursor (or over a selection)."""
    tree = getattr(snapshot, "tree", None)
    cursor_byte = snapshot.byte_offset(cursor) if snapshot is not None else cursor
    region = choose_region(text, cursor, language, tree, budgets, selection, cursor_byte)
    start, end = context_window(text, region.start, region.end, snapshot, _minus(budgets, [region]))
    return InfillPlan(language, (region,), start, end)


def plan_holes(
    text: str,
    holes: list[tuple[int, int, int | None]],
    language: str,
    snapshot: Any | None = None,
    budgets: Budgets = Budgets(),
) -> InfillPlan:
    """Plan several holes at once: each (start, end, budget or None); they replace [start, end)."""
    if not holes:
        raise ValueError("no holes to fill")
    regions = []
    for s, e, b in sorted(holes):
        line_start, line_end = _line_bounds(text, s)
        rest = text[e:line_end]
        stop = StopRules(single_line=bool(rest.strip()) or bool(text[line_start:s].strip()))
        regions.append(Region(HOLE, s, e, b or budgets.hole, stop))
    for a, b in itertools.pairwise(regions):
        if b.start < a.end:
            raise ValueError("holes overlap")
    start, end = context_window(
        text, regions[0].start, regions[-1].end, snapshot, _minus(budgets, regions)
    )
    return InfillPlan(language, tuple(regions), start, end)
