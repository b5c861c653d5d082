"""The model server's options (one plain dataclass, so it travels to Ray Serve replicas), the
request limits, the start-up checks of the options (`check_options`: a named token variable that
is not set refuses to start), and loading the Infiller a replica serves.
"""

from __future__ import annotations

import importlib
import ipaddress
import math
import os
from dataclasses import dataclass
from typing import Any

from model.interface import Infiller, InfillRequest

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
DEFAULT_API_KEY_ENV = "PARAFILL_API_KEY"
CPU_REQUEST_TOKENS = 1024


@dataclass(frozen=True)
class ServeOptions:
    model: str | None = None  # checkpoint directory; None: the shipped model/weights/
    backend: str | None = None  # "package.module:factory(path, device)" instead of the built-in
    device: str | None = None  # None / "auto": cuda when there is one, else cpu
    precision: str = "auto"  # the built-in model's weights (model.infill.PRECISIONS)
    # a published checkpoint's family where its config does not say, and its passes
    # (model/families: "exact" | "dual"); None: from config.json / exact
    model_family: str | None = None
    pass_cache: str | None = None
    threads: int = 0  # CPU threads per replica; 0: automatic
    model_id: str = "parafill"  # the name /v1/models lists and answers carry
    # the NAME of the environment variable holding the bearer token (read in each replica, so the
    # token never travels in the deployment's configuration); unset or empty: no auth (loopback)
    api_key_env: str = DEFAULT_API_KEY_ENV
    # the variable was named on purpose (`--api-key-env`): unset, the server refuses to start
    # even when it is the default's name
    api_key_env_given: bool = False
    max_queue: int = 32  # requests admitted per replica (running or waiting); past it: 429
    # the most requests one batch denoises together; the replica measures at start which batch
    # size is no slower than its requests one at a time on its device (model/serve/calibrate.py)
    # and never batches more (`calibrate_batch=False`: max_batch_size as it is)
    max_batch_size: int = 8
    calibrate_batch: bool = True
    batch_wait_ms: float = 5.0  # how long a batch waits for more, while others are in flight
    # every request's time budget on the model (seconds, from when its run begins: waiting is
    # bounded by the queue); past it, it ends with a 408 error
    request_seconds: float = 30.0
    # a request that costs more than others waiting pauses between its denoising steps (after
    # this long) for them to run (model/serve/interleave.py)
    interleave_after_s: float = 0.05
    # Host header names accepted besides loopback addresses and localhost when there is no token
    # (DNS rebinding); origins that get CORS headers (none: no CORS)
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1 << 20
    max_holes: int = 16
    max_hole_tokens: int = 512
    max_candidates: int = 8
    max_steps: int = 1024
    # the most candidates x hole tokens one request may ask for: a denoising step's cost grows
    # with it, and a small request waits at most one step of a running one (interleave.py);
    # 0: automatic, CPU_REQUEST_TOKENS on a CPU (a step of 8 x 256 took 1.9 s here, of 4 x 256
    # 0.9 s), no limit beyond max_candidates x max_hole_tokens on a GPU
    max_request_tokens: int = 0

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None


def check_options(opts: ServeOptions) -> None:
    """Refuse to start on options that would silently serve something else than asked:
    `api_key_env` naming a variable that is not set (the default's name counts only when given
    on purpose: the server would run with no auth), a time budget that is not positive."""
    named = opts.api_key_env_given or opts.api_key_env != DEFAULT_API_KEY_ENV
    if opts.api_key_env and named and opts.api_key() is None:
        raise ValueError(
            f"--api-key-env names {opts.api_key_env}, which is not set (or empty): set it to the "
            "bearer token clients must send, or leave --api-key-env out to serve loopback "
            "without a token"
        )
    if not opts.request_seconds > 0:
        raise ValueError(f"request_seconds must be positive, got {opts.request_seconds}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: not known to be loopback
        return False


def load_model(opts: ServeOptions) -> Infiller:
    """The Infiller a replica serves: the built-in model, or `opts.backend`'s factory."""
    device = None if opts.device in (None, "", "auto") else opts.device
    if opts.backend:
        mod, _, attr = opts.backend.partition(":")
        if not mod or not attr:
            raise ValueError(f"backend must look like package.module:factory, got {opts.backend!r}")
        return getattr(importlib.import_module(mod), attr)(opts.model, device)
    from model import cpu_threads
    from model.infill import load_infiller

    infiller = load_infiller(
        opts.model, device, opts.precision, family=opts.model_family, cache=opts.pass_cache
    )
    cpu_threads.apply(infiller, opts.threads)
    return infiller


class RequestError(ValueError):
    """A request the server refuses: `status` (400, 404, 413, 422), a message for the client and
    its error `code` (None: the status)."""

    def __init__(self, message: str, status: int = 422, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def check_limits(req: InfillRequest, opts: ServeOptions) -> None:
    holes = req.holes
    if not holes:
        raise RequestError("the request has no hole to fill")
    if len(holes) > opts.max_holes:
        raise RequestError(f"{len(holes)} holes; this server fills at most {opts.max_holes}")
    for h in holes:
        if not 1 <= h.max_tokens <= opts.max_hole_tokens:
            raise RequestError(
                f"a hole's max_tokens must be in [1, {opts.max_hole_tokens}], got {h.max_tokens}"
            )
        if not 0 <= h.min_tokens <= h.max_tokens:
            raise RequestError(
                f"a hole's min_tokens must be in [0, max_tokens], got {h.min_tokens}"
            )
    total = sum(h.max_tokens for h in holes)
    asked = total * max(1, req.candidates)
    if opts.max_request_tokens and asked > opts.max_request_tokens:
        raise RequestError(
            f"{req.candidates} candidates x {total} tokens = {asked}; this server fills at most "
            f"{opts.max_request_tokens} tokens per request (fewer candidates or tokens)"
        )
    if total > opts.max_hole_tokens:
        raise RequestError(
            f"the holes total {total} tokens; this server fills at most {opts.max_hole_tokens}"
        )
    if not 1 <= req.candidates <= opts.max_candidates:
        raise RequestError(
            f"candidates must be in [1, {opts.max_candidates}], got {req.candidates}"
        )
    if req.steps is not None and not 1 <= req.steps <= opts.max_steps:
        raise RequestError(f"steps must be in [1, {opts.max_steps}], got {req.steps}")
    in_range(req.temperature, "temperature", 0, MAX_TEMPERATURE)
    if req.threshold is not None:
        in_range(req.threshold, "threshold", 0, 1)
    if req.seed is not None:
        in_range(req.seed, "seed", 0, MAX_SEED)
    if req.tokens_per_step is not None:
        in_range(req.tokens_per_step, "tokens_per_step", 1, opts.max_hole_tokens)
    for h in holes:
        rules = h.stop
        if rules is None:
            continue
        for name in ("max_lines", "dedent_below", "open_brackets"):
            value = getattr(rules, name)
            if value is not None:
                in_range(value, f"stop.{name}", 0, MAX_RULE)


MAX_TEMPERATURE = 2.0
MAX_SEED = 2**63 - 1
MAX_RULE = 1 << 20


def in_range(value: float, name: str, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise RequestError(f"{name} must be in [{lo}, {hi}], got {value!r}")


def typed(data: dict[str, Any], key: str, kind, default, lo=None, hi=None):
    """data[key] checked to be of `kind` (and within [lo, hi]); RequestError otherwise."""
    value = data.get(key, default)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if ok and lo is not None and value < lo:
        ok = False
    if ok and hi is not None and value > hi:
        ok = False
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        bounds = f" in [{lo}, {hi}]" if lo is not None else ""
        raise RequestError(f"{key} must be a {names}{bounds}, got {value!r}")
    return value
