"""Typed server settings: defaults, parsing from initializationOptions and
workspace/didChangeConfiguration, and validation.

Settings arrive as camelCase JSON, either flat or under a "parafill" key. `parse_settings` returns
the new settings plus a list of human-readable problems; on any problem the server keeps the
previous settings and reports the problems with window/showMessage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

from lsp_server.planner import Budgets
from lsp_server.syntax import LANGUAGES
from model.families.checkpoint import FAMILIES as MODEL_FAMILIES
from model.families.specs import PASS_CACHES
from model.interface import PRECISIONS, SCHEDULES

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("builtin", "remote")
REMOTE_APIS = ("parafill", "fim")  # model.backends.remote.APIS (not imported: settings stay light)
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
UNSHOWN = {"remote.apiKeyEnv"}  # a wrong value may be the key itself: never echoed
# what the built-in model can hold (the shipped checkpoint's config.json train_seq_len): its
# window, and the most mask tokens it fills at once (model/infill.py refuses more: half the window)
MODEL_WINDOW = 512
MAX_FILL_TOKENS = MODEL_WINDOW // 2


@dataclass(frozen=True)
class Settings:
    model_path: str | None = None  # None: the shipped checkpoint in model/weights/
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "auto"  # built-in model's weights: "auto" (int8 on CPU) | "int8" | "fp32"
    # a published checkpoint's family where its config.json does not say (model/families)
    model_family: str | None = None
    pass_cache: str = "exact"  # a published checkpoint's passes: "exact" | "dual" (Fast-dLLM)
    schedule: str = "threshold"  # denoising schedule: "threshold" | "fixed" | "ltr"
    steps: int | None = None  # fixed: forward passes; threshold: at most this many; None: default
    threshold: float | None = None  # threshold schedule: commit confidence; None: default
    line_budget: int = Budgets.line  # mask tokens for a rest-of-line fill
    block_budget: int = Budgets.block  # mask tokens for a block body
    context_tokens: int = Budgets.context_tokens  # prefix + holes + suffix (the window is 512)
    candidates: int = 3  # candidates for an explicitly invoked completion
    # a request within this long of the one before (a burst of keys) waits this long for more
    # typing before running the model; the first request after a pause runs at once
    debounce_ms: int = 25
    # an as-you-type fill that may span lines ends at its first line end after this long (the
    # suggestion is its finished lines); explicit requests have their own; 0: no deadline
    multiline_deadline_ms: int = 300
    # an explicit (Invoked) request's fills that may span lines end at their first finished line
    # after this long (the suggestion is the lines finished so far); 0: no deadline
    explicit_deadline_ms: int = 3000
    # after a suggestion at a line's end, fill the next line in the background (as if the
    # suggestion were taken and Enter pressed: lsp_server/prefetch.py); a real request stops it
    prefetch: bool = True
    # a line fill ends no sooner than the length the model's length signal reads from its first
    # step (model/length.py), where the checkpoint has one; false: the PAD budget alone decides
    length_estimate: bool = True
    languages: tuple[str, ...] = LANGUAGES + ("*",)  # "*": any other language too
    cache_size: int = 256  # LRU entries
    threads: int = 0  # CPU threads for inference; 0: auto (1 on a 2-core machine)
    context_reuse: bool = True  # reuse the context encoding across keystrokes (approximate)
    # context beyond the file (lsp_server/context/): definitions of imported names from other
    # workspace files, the other open documents, recent edits, ahead of the prefix
    repo_context: bool = False
    repo_context_share: float = 0.25  # of contextTokens, at most, taken from the file's own window
    log_file: str | None = None
    enabled: bool = True
    # where the model runs: "builtin" (in this process) or "remote" (a model server over HTTP,
    # model/backends/remote.py; the built-in model answers while it cannot be reached)
    backend: str = "builtin"
    remote_url: str = "http://127.0.0.1:8000"  # the model server (`parafill serve-model`)
    remote_api: str = "parafill"  # "parafill": its native /v1/infill; "fim": /v1/fim/completions
    remote_model: str | None = None  # the model name sent to a fim provider (Mercury's)
    # the NAME of the environment variable that holds the server's token (never the token)
    remote_api_key_env: str | None = None
    remote_timeout_ms: int = 10_000  # a request to the model server fails after this long

    def budgets(self) -> Budgets:
        return Budgets(
            line=self.line_budget,
            bracket=self.line_budget,
            statement=max(self.line_budget, self.block_budget // 2),
            block=self.block_budget,
            context_tokens=self.context_tokens,
        )

    def language_enabled(self, language: str) -> bool:
        return self.enabled and (language in self.languages or "*" in self.languages)


# camelCase key -> (field name, validator returning (value, problem or None))
def _int(lo: int, hi: int, why: str = ""):
    def check(v: Any):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return None, f"must be an integer in [{lo}, {hi}]" + (f" ({why})" if why else "")
        return v, None

    return check


def _opt(check):
    def wrapped(v: Any):  # null, or "" from a cleared editor field, means "not set"
        return (None, None) if v is None or v == "" else check(v)

    return wrapped


def _choice(options: tuple[str, ...]):
    def check(v: Any):
        if v not in options:
            return None, f"must be one of {', '.join(options)}"
        return v, None

    return check


def _float(lo: float, hi: float):
    def check(v: Any):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            return None, f"must be a number in [{lo}, {hi}]"
        return float(v), None

    return check


def _str(v: Any):
    if not isinstance(v, str) or not v.strip():
        return None, "must be a non-empty string"
    return v, None


def _bool(v: Any):
    if not isinstance(v, bool):
        return None, "must be true or false"
    return v, None


def _languages(v: Any):
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        return None, "must be a list of language ids"
    return tuple(v), None


def _url(v: Any):
    if not isinstance(v, str) or not re.match(r"https?://[^/\s]+", v):
        return None, "must be an http:// or https:// URL"
    return v, None


def _env_name(v: Any):
    if not isinstance(v, str) or not ENV_NAME_RE.fullmatch(v):
        return None, "must be the name of an environment variable (the key itself never goes here)"
    return v, None


_FILL_LIMIT = f"the model fills at most {MAX_FILL_TOKENS} tokens, half its {MODEL_WINDOW} window"
# the shipped model reads 512 tokens and trims a longer context to that; a published coder
# reads more (up to the window its config gives: model/families/infiller.py)
MAX_CONTEXT_TOKENS = 8192
_WINDOW_LIMIT = f"at most {MAX_CONTEXT_TOKENS} tokens (the shipped model reads {MODEL_WINDOW})"

FIELDS = {
    "modelPath": ("model_path", _opt(_str)),
    "device": ("device", _choice(DEVICES)),
    "precision": ("precision", _choice(PRECISIONS)),
    "modelFamily": ("model_family", _opt(_choice(MODEL_FAMILIES))),
    "passCache": ("pass_cache", _choice(PASS_CACHES)),
    "schedule": ("schedule", _choice(SCHEDULES)),
    "steps": ("steps", _opt(_int(1, 512))),
    "threshold": ("threshold", _opt(_float(0.0, 1.0))),
    "lineBudget": ("line_budget", _int(1, MAX_FILL_TOKENS, _FILL_LIMIT)),
    "blockBudget": ("block_budget", _int(1, MAX_FILL_TOKENS, _FILL_LIMIT)),
    "contextTokens": ("context_tokens", _int(32, MAX_CONTEXT_TOKENS, _WINDOW_LIMIT)),
    "candidates": ("candidates", _int(1, 8)),
    "debounceMs": ("debounce_ms", _int(0, 2000)),
    "multilineDeadlineMs": ("multiline_deadline_ms", _int(0, 60_000)),
    "explicitDeadlineMs": ("explicit_deadline_ms", _int(0, 600_000)),
    "prefetch": ("prefetch", _bool),
    "lengthEstimate": ("length_estimate", _bool),
    "languages": ("languages", _languages),
    "cacheSize": ("cache_size", _int(0, 100_000)),
    "threads": ("threads", _int(0, 256)),
    "contextReuse": ("context_reuse", _bool),
    "repoContext": ("repo_context", _bool),
    "repoContextShare": ("repo_context_share", _float(0.0, 0.75)),
    "logFile": ("log_file", _opt(_str)),
    "enabled": ("enabled", _bool),
    "backend": ("backend", _choice(BACKENDS)),
    "remote.url": ("remote_url", _url),
    "remote.api": ("remote_api", _choice(REMOTE_APIS)),
    "remote.model": ("remote_model", _opt(_str)),
    "remote.apiKeyEnv": ("remote_api_key_env", _opt(_env_name)),
    "remote.timeoutMs": ("remote_timeout_ms", _int(100, 600_000)),
}
assert {f for f, _ in FIELDS.values()} == {f.name for f in fields(Settings)}


def parse_settings(raw: Any, base: Settings = Settings()) -> tuple[Settings, list[str]]:
    """Apply `raw` (camelCase dict, flat or under "parafill") on top of `base`.

    Returns (settings, problems); when problems is non-empty, callers keep `base`.
    """
    if raw is None:
        return base, []
    if not isinstance(raw, dict):
        return base, [f"settings must be an object, got {type(raw).__name__}"]
    if isinstance(raw.get("parafill"), dict):
        raw = raw["parafill"]
    elif "parafill" in raw and raw["parafill"] is not None:
        return base, ["parafill settings must be an object"]
    raw = _flatten_groups(raw)
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        if key not in FIELDS:  # client-side keys (trace, server path...) are not ours
            continue
        name, check = FIELDS[key]
        parsed, problem = check(value)
        if problem:
            shown = "a value not shown" if key in UNSHOWN else repr(value)  # it may be a key
            problems.append(f"parafill.{key} {problem} (got {shown})")
        else:
            changes[name] = parsed
    if problems:
        return base, problems
    return replace(base, **changes), []


def _flatten_groups(raw: dict[str, Any]) -> dict[str, Any]:
    """{"remote": {"url": ...}} (as Neovim users write it) -> {"remote.url": ...} (as VS Code
    sends it)."""
    group = raw.get("remote")
    if not isinstance(group, dict):
        return raw
    flat = {k: v for k, v in raw.items() if k != "remote"}
    flat.update({f"remote.{k}": v for k, v in group.items()})
    return flat


def to_json(s: Settings) -> dict[str, Any]:
    out = {}
    for key, (name, _) in FIELDS.items():
        v = getattr(s, name)
        out[key] = list(v) if isinstance(v, tuple) else v
    return out
