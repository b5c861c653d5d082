"""Watch it denoise: the last suggestion's trajectory per document, for `parafill/steps`.

The completion path asks the model for the trajectory of as-you-type and explicit requests
(`Ask.want_trajectory`; the built-in infiller renders a still-masked slot as MASK, and costs
nothing measurable for it: docs/server.md) and keeps the one of the last suggestion shown in
each document (dropped when it closes). The editors replay it step by step (VS Code: *Parafill:
Show Denoising*, Neovim: `:ParafillSteps`).
"""

from __future__ import annotations

from dataclasses import dataclass

from model.interface import MASK_GLYPH, InfillResult

STEPS_METHOD = "parafill/steps"
MASK = MASK_GLYPH  # how a trajectory shows a slot still masked (model/interface.py)


@dataclass(frozen=True)
class Denoising:
    """How one suggestion was made."""

    start: int  # offset of the suggestion in the document's text (its model view)
    kind: str | None  # the planner's region kind
    steps: tuple[str, ...]  # the fill after each denoising step, masked slots as MASK
    fill: str  # the model's fill (before post-processing)
    suggestion: str  # what was shown: the best candidate
    steps_used: int
    tokens: int
    model_ms: float
    suggestion_id: int | None = None  # its id for the acceptance statistics

    @classmethod
    def of(
        cls,
        result: InfillResult,
        start: int,
        kind: str | None,
        suggestion: str,
        model_ms: float,
        suggestion_id: int | None = None,
    ) -> Denoising | None:
        """The record of a result with a trajectory (None without one); the first hole's."""
        if not result.trajectory:
            return None
        steps = tuple(step[0] if step else "" for step in result.trajectory)
        fill = result.fills[0] if result.fills else ""
        return cls(
            start,
            kind,
            steps,
            fill,
            suggestion,
            result.steps_used,
            result.tokens,
            model_ms,
            suggestion_id,
        )

    def as_json(self, line: int, character: int) -> dict:
        """The `parafill/steps` answer, with the suggestion's start as an editor position."""
        return {
            "position": {"line": line, "character": character},
            "kind": self.kind,
            "steps": list(self.steps),
            "fill": self.fill,
            "suggestion": self.suggestion,
            "stepsUsed": self.steps_used,
            "tokens": self.tokens,
            "modelMs": round(self.model_ms, 1),
            "mask": MASK,
            "id": self.suggestion_id,
        }
