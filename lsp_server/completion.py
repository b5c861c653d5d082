"""The one completion path, shared by the LSP handlers and the CLI (no LSP types here):
plan -> request -> run -> candidates -> fallback -> typing-through -> prefetch, and filling
holes (a selection or every `<|fill|>` marker).

`Completer.complete(doc, cursor, ask)` answers a cursor with a `Completion` (plain data: the
insert start, the candidates best first, the region kind, the model's results, and the error if
the model failed); `Completer.fill(doc, selection, ask)` answers a fill with the edits. The
server translates LSP to and from these; the CLI calls the same functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

from lsp_server import pipeline
from lsp_server.acceptance import Tracker, log_line
from lsp_server.config import MODEL_WINDOW, Settings
from lsp_server.context import EMPTY, Packed, RepoContext
from lsp_server.engine import Engine, TypingThrough
from lsp_server.planner import Budgets, InfillPlan, plan_completion, with_budget
from lsp_server.postprocess import Candidate
from lsp_server.prefetch import after_enter
from lsp_server.steps import Denoising
from lsp_server.syntax import Document, DocumentStore, Snapshot
from model.interface import InfillCancelled, InfillResult

PREFETCH_IDLE_S = 0.1  # a next-line prefetch starts once the user paused this long
log = logging.getLogger("parafill")


@dataclass(frozen=True)
class Ask:
    """How a completion is asked for."""

    # the user asked (an Invoked trigger): holes of at least one token (an empty fill is a fine
    # answer to typing, not to asking), no debounce, the explicit deadline, no prefetch
    invoked: bool = False
    candidates: int = 1
    # complete as if this suggest item were inserted: (start, end, text) in the document
    selected: tuple[int, int, str] | None = None
    budget: int | None = None  # mask tokens per hole instead of the region kind's (CLI)
    temperature: float | None = None  # sampling of several candidates (None: the default)
    seed: int | None = None
    want_trajectory: bool = False


@dataclass
class Completion:
    start: int  # where the candidates' text is inserted
    cursor: int
    candidates: list[Candidate] = field(default_factory=list)
    kind: str | None = None  # the planner's region kind (None: nothing was asked of the model)
    results: list[InfillResult] = field(default_factory=list)  # the first decode's
    error: Exception | None = None  # the model could not answer (unavailable, or it failed)
    suggestion: int | None = None  # the candidates' suggestion id (lsp_server/acceptance.py)
    context: Packed = EMPTY  # the repository context read ahead of the prefix


@dataclass
class Filled:
    edits: list[tuple[int, int, str]]  # (start, end, text) per hole, in document order
    error: Exception | None = None
    stale: bool = False  # the document changed while filling: the edits are not to be applied


def apply_edits(text: str, edits: list[tuple[int, int, str]]) -> str:
    """`text` with non-overlapping (start, end, new text) edits, in order, applied."""
    out, pos = [], 0
    for s, e, new in edits:
        out.append(text[pos:s])
        out.append(new)
        pos = e
    out.append(text[pos:])
    return "".join(out)


class Completer:
    """The completion path's state: the engine, the last suggestion per document (typing-through),
    the newest request per document (debounce, supersede) and the next-line prefetch."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        docs: DocumentStore | None = None,
        context: RepoContext | None = None,
    ):
        self.engine = engine
        self.settings = settings  # the server replaces it when the client's settings change
        self.docs = docs
        self.context = context  # the repository context (None: the current file only)
        self.running = 0  # completions in progress (the context index waits meanwhile)
        self.typing = TypingThrough()
        self.pending: dict[str, int] = {}  # uri -> newest request ticket (debounce/supersede)
        self.last_automatic: dict[str, float] = {}  # uri -> when its last automatic request came
        self.acceptance = Tracker(_log_outcome)  # what became of each suggestion shown
        self.denoising: dict[str, Denoising] = {}  # uri -> how its last suggestion was made

    def is_open(self, doc: Document) -> bool:
        return self.docs is None or self.docs.get(doc.uri) is doc

    def forget(self, uri: str) -> None:
        """A document closed: its jobs stop and nothing of it is kept."""
        self.engine.forget(uri)
        self.typing.forget(uri)
        self.acceptance.closed(uri)
        self.denoising.pop(uri, None)
        self.pending.pop(uri, None)
        self.last_automatic.pop(uri, None)

    def in_burst(self, uri: str) -> bool:
        """Whether an automatic request for `uri` comes within `debounceMs` of the one before
        (a burst of keystrokes): it then waits that long for more typing. The first request of a
        burst runs at once (a leading-edge debounce): after a pause the wait would only add its
        length to the answer, and if more typing follows, the newer request supersedes it."""
        now = time.monotonic()
        last, self.last_automatic[uri] = self.last_automatic.get(uri), now
        wait = self.settings.debounce_ms / 1000
        return wait > 0 and last is not None and now - last < wait

    async def run(self, uri: str, req, label: str | None) -> list[InfillResult]:
        """The engine's results for `req`; a cancelled task cancels the job between steps."""
        job = self.engine.submit(uri, req, label)
        self._hold(1)
        inner = asyncio.wrap_future(job.future)
        # a request cancelled while its job runs leaves the job's InfillCancelled on `inner`:
        # read it, or asyncio logs "Future exception was never retrieved"
        inner.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:  # shielded: the job may be shared (a request joined it); release says who left
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            self.engine.release(job)
            raise
        finally:
            self._hold(-1)

    def _hold(self, n: int) -> None:
        """The context index waits while a completion runs (it never delays one)."""
        self.running += n
        if self.context is not None:
            idle = self.context.index.idle
            idle.clear() if self.running else idle.set()

    def repo_context(
        self, doc: Document | None, text: str, cursor: int, shown: bool = True
    ) -> Packed:
        """What of the workspace goes ahead of the prefix (lsp_server/context/): at most the
        repoContextShare of the context budget; EMPTY when it is off or has nothing to add."""
        s = self.settings
        if self.context is None or doc is None or not s.repo_context:
            return EMPTY
        budget = int(s.context_tokens * s.repo_context_share)
        cpt = s.budgets().chars_per_token
        return self.context.pack_for(doc, text, cursor, budget, cpt, shown)

    def room(self, packed: Packed) -> Budgets:
        """The budgets with `packed` ahead of the prefix: in the model's window beyond
        contextTokens (112 tokens at the defaults) first, the file's own window smaller by the
        rest (the same budgets when there is nothing packed)."""
        budgets = self.settings.budgets()
        if packed.text:
            over = packed.tokens - max(0, MODEL_WINDOW - budgets.context_tokens)
            budgets = replace(budgets, context_tokens=budgets.context_tokens - max(0, over))
        return budgets

    def plan(
        self,
        snapshot: Snapshot,
        cursor: int,
        ask: Ask,
        doc: Document | None = None,
        shown: bool = True,
    ) -> tuple[InfillPlan, Packed]:
        """The plan at `cursor`, with the repository context of `doc` ahead of its prefix (the
        same plan as without when there is none)."""
        packed = self.repo_context(doc, snapshot.text, cursor, shown)
        plan = plan_completion(
            snapshot.text, cursor, snapshot.language, snapshot, self.room(packed)
        )
        if packed.text:
            plan = replace(plan, header=packed.text)
        return with_budget(plan, ask.budget), packed

    def request(self, plan: InfillPlan, text: str, ask: Ask, prefetch: bool = False):
        """The model request for a plan: one path for requests and prefetches, so that a
        prefetch asks exactly what the request it anticipates will ask (the engine's key). An
        explicit request has a deadline too, a generous one (explicitDeadlineMs): past it, its
        fills that may span lines end at a finished line, and the answer is the lines finished
        so far (the results say so: ended_by "deadline"; the engine counts deadlineCuts). A
        `prefetch` has none: a request that takes it over gives it its own."""
        s = self.settings
        deadline = s.explicit_deadline_ms if ask.invoked else s.multiline_deadline_ms
        if prefetch:
            deadline = 0
        return pipeline.build_request(
            plan,
            text,
            self.settings,
            ask.candidates,
            ask.invoked,
            deadline,
            temperature=ask.temperature,
            seed=ask.seed,
            want_trajectory=ask.want_trajectory or None,
        )

    async def complete(self, doc: Document, cursor: int, ask: Ask = Ask()) -> Completion:
        """Candidates at `cursor` (an offset into doc.text), best first; none when superseded,
        stale, cancelled or unusable."""
        uri = doc.uri
        burst = not ask.invoked and self.in_burst(uri)
        ticket = self.pending.get(uri, 0) + 1
        self.pending[uri] = ticket
        text, version = doc.text, doc.version
        start = cursor
        if ask.selected is not None:  # complete as if the selected suggest item were inserted
            s, e, sel_text = ask.selected
            text = text[:s] + sel_text + text[e:]
            start, cursor = s, s + len(sel_text)
        out = Completion(start, cursor)
        if doc.binary or not self.settings.language_enabled(doc.language):
            return out
        if ask.selected is None:
            through = self.typing.rest(uri, text, cursor)
            if through:  # (a suggestion typed or taken in full leaves nothing more to suggest)
                self.engine.count("typed_through")
                self.acceptance.typed(uri, [(c.text, rest) for c, rest in through])
                out.candidates = [replace(c, text=rest) for c, rest in through if rest]
                out.suggestion = self.acceptance.current(uri)
                return out
        anchor = _anchor(text, cursor)
        self.acceptance.left(uri, anchor)  # not typed through: what was shown is decided
        if burst:
            await asyncio.sleep(self.settings.debounce_ms / 1000)
            if self.pending.get(uri) != ticket or doc.version != version:
                self.engine.count("superseded")
                return out
        tree = doc.tree if ask.selected is None else None
        plan, out.context = self.plan(Snapshot(text, tree, doc.language), cursor, ask, doc)
        out.kind = plan.kind
        req = self.request(plan, text, ask)
        t0 = time.perf_counter()
        cands = None
        while req is not None:
            try:
                results = await self.run(uri, req, plan.kind)
            except InfillCancelled:
                return out
            except Exception as exc:  # noqa: BLE001 - the caller reports it; the server stays up
                out.error = exc
                return out
            if doc.version != version or not self.is_open(doc):  # stale, or closed meanwhile
                return out
            out.results = out.results or results
            cands = pipeline.merge_candidates(
                cands, pipeline.region_candidates(plan, text, results)
            )
            if pipeline.deadline_cut(results):
                self.engine.count("deadline_cuts")
            req = pipeline.fallback_request(req, cands)
            if req is not None:
                self.engine.count("fallbacks")
        model_ms = (time.perf_counter() - t0) * 1000
        log.info("completion %s %.0f ms, %d item(s)", plan.kind, model_ms, len(cands))
        out.candidates = cands
        if cands:
            texts = [c.text for c in cands]
            out.suggestion = self.acceptance.shown(
                uri, plan.kind, doc.language, texts, model_ms, anchor
            )
            made = Denoising.of(
                out.results[0], start, plan.kind, texts[0], model_ms, out.suggestion
            )
            if made is not None:
                self.denoising[uri] = made
        if ask.selected is None:
            self.typing.remember(uri, text, cursor, cands)
            if not ask.invoked and self.settings.prefetch:
                first = cands[0].text if cands else ""
                self.prefetch(doc, ticket, text, cursor, first, ask.want_trajectory)
        return out

    def prefetch(
        self,
        doc: Document,
        ticket: int,
        text: str,
        cursor: int,
        suggestion: str,
        want_trajectory: bool = False,
    ) -> None:
        """Fill, in the background, the line after this one as the editor will show it once
        `suggestion` is taken and Enter pressed (lsp_server/prefetch.py): started once the user
        has paused PREFETCH_IDLE_S after this answer (request `ticket`), so that typing on pays
        nothing for it. It has no deadline: a request that takes it over gives it its own. It
        asks for the trajectory as the request it anticipates will (the engine's key)."""
        inserted = after_enter(text, cursor, suggestion, doc.language)
        if inserted is None or doc.binary:
            return
        version = doc.version

        def start() -> None:
            if self.pending.get(doc.uri) != ticket:
                return  # another request came
            if not self.is_open(doc):
                return  # the document was closed
            if doc.version != version:
                return  # the text changed
            snap = doc.snapshot_with(cursor, inserted)
            ask = Ask(want_trajectory=want_trajectory)
            plan, _ = self.plan(snap, cursor + len(inserted), ask, doc, shown=False)
            req = self.request(plan, snap.text, ask, prefetch=True)
            self.engine.submit(doc.uri, req, plan.kind, speculative=True)

        asyncio.get_running_loop().call_later(PREFETCH_IDLE_S, start)

    async def fill(
        self, doc: Document, selection: tuple[int, int] | None = None, ask: Ask = Ask()
    ) -> Filled:
        """Fill `selection` (start, end offsets), or every `<|fill|>` marker of the document
        (ValueError when there is none). A budget in `ask` applies to the holes that do not name
        their own."""
        text, version = doc.text, doc.version
        snapshot = Snapshot(text, doc.tree, doc.language)
        if selection is not None:
            cursor = selection[0]
        else:  # (plan_markers says when there is none)
            cursor = next((m.start for m in pipeline.find_markers(text)), 0)
        packed = self.repo_context(doc, text, cursor)  # ranked at the first hole
        budgets = self.room(packed)
        if selection is not None:
            s, e = selection
            plan = plan_completion(text, e, doc.language, snapshot, budgets, selection=(s, e))
        else:
            plan = pipeline.plan_markers(text, doc.language, budgets, snapshot)
        if packed.text:
            plan = replace(plan, header=packed.text)
        plan = with_budget(plan, ask.budget, replacing=self.settings.budgets().hole)
        req = pipeline.build_request(
            plan,
            text,
            self.settings,
            max(1, ask.candidates),
            temperature=ask.temperature,
            seed=ask.seed,
        )
        try:
            results = await self.run(doc.uri + "#fill", req, None)
        except Exception as exc:  # noqa: BLE001 - the caller reports it (InfillCancelled: a
            return Filled([], error=exc)  # newer fill of the document superseded this one)
        fills = pipeline.hole_fills(plan, text, results)
        edits = [(r.start, r.end, f) for r, f in zip(plan.regions, fills)]
        return Filled(edits, stale=doc.version != version)


ANCHOR_CHARS = 2000  # text either side of the cursor that makes a suggestion's place


def _anchor(text: str, cursor: int) -> int:
    """Where a suggestion is made: the same place with the same text around it is the same."""
    return hash((cursor, text[max(0, cursor - ANCHOR_CHARS) : cursor + ANCHOR_CHARS]))


def _log_outcome(rec: dict) -> None:
    """An outcome to the server's log (the logFile setting; lsp_server/acceptance.py)."""
    log.info(log_line(rec))
