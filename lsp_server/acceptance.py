"""Acceptance statistics, local only: what became of each suggestion the server showed.

Each suggestion (the candidates of one answer that ran the model, or came from its cache) gets a
small id; its inline items carry the command `parafill.accepted` with that id, which the editor
runs when the user accepts one in full. Everything else is inferred from what is typed next, as
typing-through sees it (lsp_server/completion.py):

- the text typed since is a prefix of a candidate: taken so far (an editor's accept-next-word or
  accept-next-line, or typing it by hand); all of a candidate typed or inserted: accepted in full;
- the next request does not continue it (something else typed, the cursor moved away) or the
  document closed: accepted in part when some of it had been taken, dismissed otherwise.

Each suggestion's outcome is counted once: the first of the command and the inference decides,
the other is ignored. The counts are kept per region kind and language, with the model time of
the accepted suggestions; `parafill/status` reports them (`acceptance`), each outcome is logged
as one line (`acceptance {json}`) to the server's log (the `logFile` setting), from which
`parafill stats` prints them (`summarize_log`). Nothing is sent anywhere.

Pure apart from the optional sink that logs an outcome.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

ACCEPTED_COMMAND = "parafill.accepted"
LOG_TAG = "acceptance"
ACCEPTED, PARTIAL, DISMISSED = "accepted", "partial", "dismissed"
OUTCOMES = (ACCEPTED, PARTIAL, DISMISSED)
BY_COMMAND, BY_TYPING, BY_REPLACED, BY_CLOSE = "command", "typing", "replaced", "closed"
MODEL_MS_KEPT = 500  # model times of recent accepted suggestions (p50)
UNKNOWN = "unknown"


@dataclass
class Shown:
    """A suggestion on screen whose outcome is not known yet."""

    id: int
    uri: str
    kind: str
    language: str
    texts: tuple[str, ...]  # its candidates, best first
    model_ms: float
    anchor: Hashable  # where it was made (cursor and the text around it)
    taken: int = 0  # characters of it typed or accepted so far


@dataclass
class Counts:
    shown: int = 0
    accepted: int = 0
    partial: int = 0
    dismissed: int = 0
    model_ms: deque = field(default_factory=lambda: deque(maxlen=MODEL_MS_KEPT))
    model_ms_sum: float = 0.0

    def add(self, outcome: str, model_ms: float | None) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome == ACCEPTED and model_ms is not None:
            self.model_ms.append(model_ms)
            self.model_ms_sum += model_ms

    def as_json(self) -> dict:
        decided = self.accepted + self.partial + self.dismissed
        times = sorted(self.model_ms)
        return {
            "shown": self.shown,
            "accepted": self.accepted,
            "partial": self.partial,
            "dismissed": self.dismissed,
            "pending": self.shown - decided,
            # of the suggestions decided: taken in full / in part
            "acceptRate": _ratio(self.accepted, decided),
            "partialRate": _ratio(self.partial, decided),
            "acceptedModelMs": {
                "p50": round(times[len(times) // 2], 1) if times else None,
                "mean": round(self.model_ms_sum / self.accepted, 1) if self.accepted else None,
            },
        }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


class Stats:
    """Counts overall, per region kind and per language."""

    def __init__(self) -> None:
        self.total = Counts()
        self.by_kind: dict[str, Counts] = {}
        self.by_language: dict[str, Counts] = {}

    def _all(self, kind: str, language: str) -> tuple[Counts, ...]:
        return (
            self.total,
            self.by_kind.setdefault(kind, Counts()),
            self.by_language.setdefault(language, Counts()),
        )

    def shown(self, kind: str, language: str) -> None:
        for c in self._all(kind, language):
            c.shown += 1

    def outcome(self, outcome: str, kind: str, language: str, model_ms: float | None) -> None:
        for c in self._all(kind, language):
            c.add(outcome, model_ms)

    def as_json(self) -> dict:
        out = self.total.as_json()
        out["byKind"] = {k: c.as_json() for k, c in sorted(self.by_kind.items())}
        out["byLanguage"] = {k: c.as_json() for k, c in sorted(self.by_language.items())}
        return out


class Tracker:
    """The suggestion shown per document, and the statistics of those decided. `sink` gets
    each outcome as a JSON-ready dict (the server logs it)."""

    def __init__(self, sink: Callable[[dict], None] | None = None) -> None:
        self.sink = sink
        self.stats = Stats()
        self._next = 0
        self._shown: dict[str, Shown] = {}  # uri -> its suggestion not yet decided

    def shown(
        self,
        uri: str,
        kind: str | None,
        language: str | None,
        texts: Iterable[str],
        model_ms: float,
        anchor: Hashable = None,
    ) -> int:
        """A suggestion shown at `anchor`: its id. The same candidates at the same place again
        (an editor asking twice) are the same suggestion; any other replaces the one before."""
        texts = tuple(texts)
        old = self._shown.get(uri)
        if old is not None and old.anchor == anchor and old.texts == texts:
            return old.id
        self.left(uri)
        self._next += 1
        s = Shown(self._next, uri, kind or UNKNOWN, language or UNKNOWN, texts, model_ms, anchor)
        self._shown[uri] = s
        self.stats.shown(s.kind, s.language)
        return s.id

    def current(self, uri: str) -> int | None:
        """The id of the suggestion shown in `uri`, while its outcome is open."""
        s = self._shown.get(uri)
        return None if s is None else s.id

    def typed(self, uri: str, rests: Iterable[tuple[str, str]]) -> None:
        """Typing-through of the suggestion in `uri`: (candidate, what is left of it) for each
        candidate that what was typed since is a prefix of. Nothing left: accepted in full."""
        s = self._shown.get(uri)
        if s is None:
            return
        for text, rest in rests:
            if not rest:
                self._decide(s, ACCEPTED, BY_TYPING, len(text))
                return
            s.taken = max(s.taken, len(text) - len(rest))

    def left(self, uri: str, anchor: Hashable = None, by: str = BY_REPLACED) -> None:
        """The next request in `uri` does not continue its suggestion (typing-through found no
        candidate to go on with): decided as accepted in part or dismissed, unless it is the
        very place it was made (`anchor`: asked again without typing)."""
        s = self._shown.get(uri)
        if s is None or (anchor is not None and anchor == s.anchor):
            return
        self._decide(s, PARTIAL if s.taken else DISMISSED, by, s.taken)

    def closed(self, uri: str) -> None:
        self.left(uri, by=BY_CLOSE)

    def accepted(self, sid: int, index: int = 0) -> bool:
        """The editor's command: candidate `index` of suggestion `sid` accepted in full. False
        when the suggestion was decided already (or is unknown): it is not counted again."""
        for s in self._shown.values():
            if s.id == sid:
                text = s.texts[index] if 0 <= index < len(s.texts) else ""
                self._decide(s, ACCEPTED, BY_COMMAND, len(text))
                return True
        return False

    def _decide(self, s: Shown, outcome: str, by: str, taken: int) -> None:
        del self._shown[s.uri]
        self.stats.outcome(outcome, s.kind, s.language, s.model_ms)
        if self.sink is not None:
            self.sink(record(s, outcome, by, taken))

    def summary(self) -> dict:
        return self.stats.as_json()


def record(s: Shown, outcome: str, by: str, taken: int) -> dict:
    """One outcome as logged (and read back by `summarize_log`)."""
    return {
        "id": s.id,
        "outcome": outcome,
        "by": by,
        "kind": s.kind,
        "language": s.language,
        "modelMs": round(s.model_ms, 1),
        "taken": taken,
        "length": len(s.texts[0]) if s.texts else 0,
    }


def log_line(rec: dict) -> str:
    return f"{LOG_TAG} {json.dumps(rec, separators=(',', ':'))}"


def parse_line(line: str) -> dict | None:
    """The outcome a log line holds (`log_line`), or None."""
    i = line.find(LOG_TAG + " {")
    if i < 0:
        return None
    try:
        rec = json.loads(line[i + len(LOG_TAG) + 1 :])
    except ValueError:
        return None
    if not isinstance(rec, dict) or rec.get("outcome") not in OUTCOMES:
        return None
    return rec


def summarize_log(lines: Iterable[str]) -> dict:
    """The statistics of the outcomes in a server log: each outcome is one suggestion shown."""
    stats = Stats()
    for line in lines:
        rec = parse_line(line)
        if rec is None:
            continue
        kind, language = str(rec.get("kind", UNKNOWN)), str(rec.get("language", UNKNOWN))
        ms = rec.get("modelMs")
        stats.shown(kind, language)
        stats.outcome(rec["outcome"], kind, language, ms if isinstance(ms, (int, float)) else None)
    return stats.as_json()


def format_summary(summary: dict) -> str:
    """A table of a summary (`Tracker.summary`, `summarize_log`) for the terminal."""
    rows = [("all", summary)]
    rows += [(f"kind {k}", v) for k, v in summary.get("byKind", {}).items()]
    rows += [(f"language {k}", v) for k, v in summary.get("byLanguage", {}).items()]
    head = ("", "shown", "accepted", "in part", "dismissed", "accept rate", "model ms (p50)")
    table = [head]
    for name, c in rows:
        rate = c.get("acceptRate")
        p50 = (c.get("acceptedModelMs") or {}).get("p50")
        table.append(
            (
                name,
                str(c.get("shown", 0)),
                str(c.get("accepted", 0)),
                str(c.get("partial", 0)),
                str(c.get("dismissed", 0)),
                "-" if rate is None else f"{100 * rate:.1f} %",
                "-" if p50 is None else f"{p50:.0f}",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))
        )
        for r in table
    )
