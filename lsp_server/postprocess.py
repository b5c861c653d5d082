"""Post-processing of model fills (pure): each filter is one small function with golden tests.

Owns: the chain from a backend's fills to ranked candidates (`process`): residue stripped, the
fill cut at its scope end and its degenerate repetition dropped (the text rules of
model/codetext.py, which the backend also evaluates between denoising steps), fills that only
repeat the suffix or the next line dropped, the range extended over characters the editor
auto-closed, and candidates ranked by tree-sitter errors in prefix + fill + suffix against the
context without the fill.
"""

from __future__ import annotations

from dataclasses import dataclass

from lsp_server import syntax
from model.codetext import cut_to_scope, drop_repetition, strip_special, trim_trailing
from model.interface import StopRules

AUTO_CLOSED = set(")]}\"'`;,")


@dataclass
class Candidate:
    text: str  # the text to insert (replacing the region plus `extend` more characters)
    score: float = 0.0
    extend: int = 0  # characters after the region end replaced too (auto-closed brackets/quotes)
    errors: int = 0  # new tree-sitter errors the fill introduces


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
            fill = trim_trailing("\n".join(lines[:-k]))
    return fill


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


def clean(text: str, stop: StopRules, language: str) -> str:
    """A fill's residue stripped, cut at its scope end, its degenerate repetition dropped: the
    text rules every fill passes (a candidate's and a `<|fill|>` hole's alike)."""
    return drop_repetition(cut_to_scope(strip_special(text), stop, language))


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
        fill = clean(text, stop, language)
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
