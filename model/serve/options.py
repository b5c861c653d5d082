"""The model server's options (one plain dataclass, so it travels to Ray Serve replicas), the
request limits, and loading the Infiller a replica serves.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from model.interface import Infiller, InfillRequest

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
DEFAULT_API_KEY_ENV = "PARAFILL_API_KEY"


@dataclass(frozen=True)
class ServeOptions:
    model: str | None = None  # checkpoint directory; None: the shipped model/weights/
    backend: str | None = None  # "package.module:factory(path, device)" instead of the built-in
    device: str | None = None  # None / "auto": cuda when there is one, else cpu
    precision: str = "auto"  # the built-in model's weights (model.infill.PRECISIONS)
    threads: int = 0  # CPU threads per replica; 0: automatic
    model_id: str = "parafill"  # the name /v1/models lists and answers carry
    # the NAME of the environment variable holding the bearer token (read in each replica, so the
    # token never travels in the deployment's configuration); unset or empty: no auth (loopback)
    api_key_env: str = DEFAULT_API_KEY_ENV
    max_queue: int = 32  # requests admitted per replica (running or waiting); past it: 429
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0  # how long a batch waits for more, while others are in flight
    max_body_bytes: int = 1 << 20
    max_holes: int = 16
    max_hole_tokens: int = 512
    max_candidates: int = 8
    max_steps: int = 1024

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None


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

    infiller = load_infiller(opts.model, device, opts.precision)
    cpu_threads.apply(infiller, opts.threads)
    return infiller


class RequestError(ValueError):
    """A request the server refuses: `status` (400, 413, 422) and a message for the client."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


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
    if not 1 <= req.candidates <= opts.max_candidates:
        raise RequestError(
            f"candidates must be in [1, {opts.max_candidates}], got {req.candidates}"
        )
    if req.steps is not None and not 1 <= req.steps <= opts.max_steps:
        raise RequestError(f"steps must be in [1, {opts.max_steps}], got {req.steps}")


def typed(data: dict[str, Any], key: str, kind, default, lo=None, hi=None):
    """data[key] checked to be of `kind` (and within [lo, hi]); RequestError otherwise."""
    value = data.get(key, default)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if ok and lo is not None and value < lo:
        ok = False
    if ok and hi is not None and value > hi:
        ok = False
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        bounds = f" in [{lo}, {hi}]" if lo is not None else ""
        raise RequestError(f"{key} must be a {names}{bounds}, got {value!r}")
    return value
