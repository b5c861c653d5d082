"""Variable-length denoising (DreamOn's expand and delete): a pure loop over a step function.

Owns: a canvas whose holes grow and shrink as they are filled. Each hole starts from a few masks
(`GrowConfig.start`); each pass scores the masked slots and commits the best one (DreamOn's
reference sampler, alg "entropy": the negative entropy of the slot's distribution; "confidence":
the probability of the chosen token) or, by default, every slot whose chosen token is at least
`threshold` likely and at least the best one. A committed expand token becomes two masks (at
most `max_expansions` a hole, never past the hole's `max_len`: the expand logit is blocked
then); a committed end token deletes itself and every slot after it in its hole that was masked
before this pass (what the reference does by filling them with the end token and deleting every
end token). With one token a pass and greedy choice this is token for token the reference
(tests/test_families.py checks it against a fixture made with the authors' code).

`GrowingDenoiser` has the shape of model/sampler.py's `Denoiser` (`done`, `stop_asked`,
`advance`, `output`), so `sampler.denoise` and `denoise_batch` run it; its `x` is a list of rows,
each a list of holes, each a list of ids, and the step function gives each row's logits at its
slots in order ((slots, V) per row).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model.codetext import BUDGET, PAD

ALGS = ("entropy", "confidence")
BLOCK = 1e9  # subtracted from the expand logit where a hole may not grow (as the reference)


@dataclass(frozen=True)
class GrowConfig:
    start: int = 4  # masks a hole starts from (DreamOn's min_gen_len)
    max_expansions: int = 64  # expand tokens committed in a hole at most (max_gen_len)
    steps: int = 128  # passes at most
    alg: str = "entropy"
    tokens_per_step: int | None = None  # None: every slot at least `threshold` likely (>= 1)
    threshold: float = 0.9
    temperature: float = 0.0
    top_p: float | None = None
    banned: tuple[int, ...] = ()  # ids never committed (none in DreamOn's reference sampler)


@dataclass(frozen=True)
class GrowIds:
    mask: int
    end: int
    expand: int


@dataclass(frozen=True)
class GrowHooks:
    should_stop: Callable[[], bool] | None = None
    # rows -> per row, per hole: None, or why the hole is over now (its fill is cut at its
    # first masked slot)
    ended: Callable[[list[list[list[int]]]], list[list[str | None]]] | None = None
    on_step: Callable[[int, list[list[list[int]]]], None] | None = None


@dataclass
class GrowOutput:
    rows: list[list[list[int]]]  # each row's holes' ids (no masks, no end tokens)
    logprob_sum: list[float]
    committed: list[int]
    steps_used: int
    ended_by: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, hole) -> why
    trajectory: list[list[list[list[int]]]] = field(default_factory=list)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering as the reference does it: the smallest set of most likely tokens whose
    probability passes `top_p` keeps its logits; the rest get the dtype's minimum."""
    sorted_logits, order = torch.sort(logits, descending=True)
    cum = torch.cumsum(torch.softmax(sorted_logits, -1), -1)
    drop = cum > top_p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    remove = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, drop)
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def pick(
    logits: torch.Tensor, cfg: GrowConfig, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, V) logits -> the chosen token per slot, its score for the order of commits (the alg),
    and its probability."""
    if cfg.temperature > 0:
        logits = logits / cfg.temperature
    if cfg.top_p is not None and cfg.top_p < 1:
        logits = top_p_filter(logits, cfg.top_p)
    probs = torch.softmax(logits, -1)
    if cfg.temperature > 0:
        x0 = torch.multinomial(probs, 1, generator=generator)[:, 0]
        p0 = probs.gather(-1, x0[:, None])[:, 0]
    else:
        p0, x0 = probs.max(-1)
    if cfg.alg == "entropy":
        score = (probs * torch.log(probs + 1e-10)).sum(-1)
    else:
        score = p0
    return x0, score, p0


class GrowingDenoiser:
    """One request's variable-length canvas: `batch` rows (candidates) of `len(max_len)` holes."""

    def __init__(
        self,
        max_len: list[int],
        ids: GrowIds,
        cfg: GrowConfig,
        batch: int = 1,
        hooks: GrowHooks = GrowHooks(),
        generator: torch.Generator | None = None,
        want_trajectory: bool = False,
        room: int | None = None,
    ):
        if cfg.alg not in ALGS:
            raise ValueError(f"unknown alg {cfg.alg!r}; expected one of {ALGS}")
        self.cfg, self.ids, self.hooks, self.generator = cfg, ids, hooks, generator
        self.max_len = [max(0, int(m)) for m in max_len]
        self.room = room  # slots all holes together may grow to (the window), None: no limit
        self.want_trajectory = want_trajectory
        start = [min(cfg.start, m) for m in self.max_len]
        self.x = [[[ids.mask] * s for s in start] for _ in range(batch)]
        self.grown = [[0] * len(max_len) for _ in range(batch)]
        self.logp = [0.0] * batch
        self.ended_by: dict[tuple[int, int], str] = {}
        self.traj: list = []
        self.steps = 0

    @property
    def done(self) -> bool:
        return self.steps >= self.cfg.steps or not any(
            self.ids.mask in h for row in self.x for h in row
        )

    def stop_asked(self) -> bool:
        return self.hooks.should_stop is not None and bool(self.hooks.should_stop())

    def output(self) -> GrowOutput:
        mask = self.ids.mask
        rows = [[[t for t in h if t != mask] for h in row] for row in self.x]
        count = [sum(len(h) for h in row) for row in rows]
        for r, row in enumerate(self.x):
            for h in range(len(row)):
                self.ended_by.setdefault((r, h), BUDGET)
        return GrowOutput(rows, self.logp, count, self.steps, self.ended_by, self.traj)

    def may_grow(self, r: int, h: int) -> bool:
        row = self.x[r]
        if self.room is not None and sum(len(k) for k in row) >= self.room:
            return False
        return len(row[h]) < self.max_len[h] and self.grown[r][h] < self.cfg.max_expansions

    def advance(self, logits: list[torch.Tensor]) -> None:
        """One pass: `logits[r]` is row r's (slots, V) logits, its holes' slots in order."""
        self.steps += 1
        mask, expand = self.ids.mask, self.ids.expand
        for r, row in enumerate(self.x):
            where = [(h, j) for h, hole in enumerate(row) for j, t in enumerate(hole) if t == mask]
            if not where:
                continue
            offsets, o = [], 0
            for hole in row:
                offsets.append(o)
                o += len(hole)
            flat = torch.tensor([offsets[h] + j for h, j in where], device=logits[r].device)
            lg = logits[r].float().index_select(0, flat)
            if self.cfg.banned:
                lg[:, list(self.cfg.banned)] = -math.inf
            blocked = [h for h in range(len(row)) if not self.may_grow(r, h)]
            if blocked:
                rows_blocked = torch.tensor([h in blocked for h, _ in where], device=lg.device)
                lg[:, expand] = torch.where(rows_blocked, lg[:, expand] - BLOCK, lg[:, expand])
            x0, score, p0 = pick(lg, self.cfg, self.generator)
            k = self.cfg.tokens_per_step
            if k is None:
                k = max(1, int((p0 >= self.cfg.threshold).sum()))
            chosen = torch.topk(score, min(k, len(where))).indices.tolist()
            logp = torch.log(p0.clamp_min(1e-30))
            before = [list(h) for h in row]
            for c in chosen:
                h, j = where[c]
                t = int(x0[c])
                row[h][j] = t
                if t != mask:
                    self.logp[r] += float(logp[c])
            self.x[r] = self._settle(r, row, before)
        self.steps_ended()
        if self.want_trajectory:
            self.traj.append([[list(h) for h in row] for row in self.x])
        if self.hooks.on_step is not None:
            self.hooks.on_step(self.steps, self.x)

    def _settle(self, r: int, row: list[list[int]], before: list[list[int]]) -> list[list[int]]:
        """Apply the pass's ends and expansions to one row."""
        mask, end, expand = self.ids.mask, self.ids.end, self.ids.expand
        out = []
        for h, (hole, prev) in enumerate(zip(row, before)):
            fresh = [prev[j] == mask for j in range(len(hole))]
            ends = [j for j, t in enumerate(hole) if t == end and fresh[j]]
            if ends:
                cut = ends[0]
                # the end and every slot masked before this pass after it go
                hole = [t for j, t in enumerate(hole) if j < cut or not fresh[j]]
                self.ended_by[(r, h)] = PAD
            grown = []
            for t in hole:
                if t == expand:  # one slot becomes two masks
                    grown += [mask, mask]
                    self.grown[r][h] += 1
                else:
                    grown.append(t)
            # several expansions in one pass may pass the cap: the slots past it go
            out.append(grown[: self.max_len[h]])
        return out

    def steps_ended(self) -> None:
        """Ask the stop rules; a hole they end is cut at its first masked slot."""
        if self.hooks.ended is None:
            return
        mask = self.ids.mask
        verdicts = self.hooks.ended(self.x)
        for r, row in enumerate(self.x):
            for h, why in enumerate(verdicts[r]):
                if why and mask in row[h]:
                    row[h] = row[h][: row[h].index(mask)]
                    self.ended_by[(r, h)] = why
