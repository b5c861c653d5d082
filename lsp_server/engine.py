"""The engine owns the model backend: background loading, one worker thread, cancellation,
superseding per document, speculative jobs (prefetches that any real request cancels or takes
over), an LRU result cache, typing-through, and latency statistics.

It loads the language server's backend (`model.infill`, imported lazily inside the loader thread
so `initialize` answers at once). The other server modules take plain data from `model/interface.py`
and text rules from `model/codetext.py`; only doctor.py (checking a checkpoint) and cli.py
(`serve-model`, the model server) reach further into `model/`.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from lsp_server.pipeline import deadline_cut
from model import cpu_threads
from model.interface import (
    CheckpointError,
    Hole,
    InfillCancelled,
    Infiller,
    InfillRequest,
    InfillResult,
    past,
)

log = logging.getLogger("parafill.engine")
# (model path, device, precision, threads) -> Infiller (builtin_loader, import_loader, remote_loader)
Loader = Callable[[str | None, str | None, str, int], Infiller]
LATENCY_WINDOW = 500  # recent completions kept for p50/p95
TYPE_THROUGH_CONTEXT = 2000  # characters around the cursor compared for typing-through
IDLE, LOADING, READY, ERROR = "idle", "loading", "ready", "error"
DEFAULT_MODEL = "(shipped)"  # how the shipped checkpoint (model path None) is named in messages


class ModelUnavailable(RuntimeError):
    """The model could not be loaded; the message says why (e.g. the missing file)."""


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


LIBC = _libc()
M_ARENA_MAX = -8  # glibc mallopt parameters
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Fewer glibc malloc arenas, and a fixed mmap threshold: the worker's torch buffers otherwise
    fragment into their own arenas, and once glibc raises its threshold (it does after freeing a
    large block) the context activations (MBs each) land in the heap instead of their own
    mappings, so the server's RSS creeps up by hundreds of MB over a typing session."""
    if LIBC is not None:
        LIBC.mallopt(M_ARENA_MAX, arenas)
        LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim_memory(collect: bool = False) -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim); cheap, run after each job.
    `collect` first frees reference cycles (after a model load: about 90 MB of them)."""
    if collect:
        gc.collect()
    if LIBC is not None:
        LIBC.malloc_trim(0)


def builtin_loader(
    path: str | None,
    device: str | None,
    precision: str = "auto",
    threads: int = 0,
    **options: str,
) -> Infiller:
    """The in-process backend: `model.infill.load_infiller` (imported lazily; `options`: its
    `family` and `cache` for a published checkpoint), with
    torch's threads set (0: automatic, widening onto idle cores for a full encode). The cycle
    collector waits meanwhile: torch's import and the load make few cycles but hundreds of
    thousands of objects it would scan again and again (0.1 s); `Engine._load` collects after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        from model.infill import load_infiller

        infiller = load_infiller(path, device, precision, **options)
    finally:
        if enabled:
            gc.enable()
    cpu_threads.apply(infiller, threads)
    return infiller


def import_loader(spec: str) -> Loader:
    """A loader from "package.module:factory"; the factory takes (path, device) and builds its
    Infiller as it likes (precision and threads are the built-in model's)."""
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise ValueError(f"backend must look like package.module:factory, got {spec!r}")
    factory = getattr(importlib.import_module(mod), attr)

    def load(path: str | None, device: str | None, precision: str = "auto", threads: int = 0, **_):
        return factory(path, device)

    return load


def remote_loader(
    settings: Any,
    fallback: Loader | None = builtin_loader,
    notify: Callable[[str], None] | None = None,
) -> Loader:
    """A loader for `backend: remote` (lsp_server/config.py Settings `remote_*`): an Infiller
    that asks the model server at `remote_url` (model/backends/remote.py) and, while that server
    cannot be reached, the model `fallback` loads (the built-in one by default; None: no
    fallback, the error goes to the caller). `notify` is told once when the server cannot be
    reached (and once when it is back). The API key is read from the environment variable that
    `remote_api_key_env` names; it is never logged."""

    def load(
        path: str | None,
        device: str | None,
        precision: str = "auto",
        threads: int = 0,
        **options: str,
    ) -> Infiller:
        from model.backends.remote import FallbackInfiller, RemoteInfiller  # (the stdlib only)

        key = None
        if settings.remote_api_key_env:
            import os

            key = os.environ.get(settings.remote_api_key_env)
            if not key:
                raise ModelUnavailable(
                    f"remote.apiKeyEnv names {settings.remote_api_key_env}, which is not set "
                    "in the language server's environment"
                )
        remote = RemoteInfiller(
            settings.remote_url,
            settings.remote_api,
            settings.remote_model,
            key,
            settings.remote_timeout_ms / 1000,
        )

        def local() -> Infiller:
            assert fallback is not None
            return fallback(path, device, precision, threads, **options)

        infiller = FallbackInfiller(remote, local if fallback is not None else None, notify)
        infiller.check()  # an unreachable server is said at once, and the fallback loaded
        return infiller

    return load


def _without_frames(exc: BaseException) -> BaseException:
    """The exception without its traceback. A traceback keeps the frames of the failed run alive,
    and through them the context K/V and logits (tens of MB); the job's future holding the
    exception closes a reference cycle (frame -> job -> future -> exception -> frame) that only
    the cyclic GC frees, and it rarely runs here: cancelled runs held the server's RSS 200-500 MB
    above its post-load level while typing."""
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)


@dataclass
class Job:
    doc: str
    request: InfillRequest
    key: tuple
    future: Future = field(default_factory=Future)
    stop: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    label: str | None = None  # what kind of request (the planner's region kind), for statistics
    # when the one waiting for it wants its fills (time.time()): the request's deadline, moved to
    # the deadline of a request that takes a prefetch over (model/interface.py InfillRequest)
    deadline: float | None = None
    # a prefetch (lsp_server/prefetch.py): no one waits for it yet; any real request cancels it,
    # unless it is this very request, which then takes the job over (it stops being speculative)
    speculative: bool = False
    adopted: float | None = None  # when a real request took the prefetch over (perf_counter)
    waiters: int = 1  # requests waiting for it (Engine.release cancels it when the last goes)

    def cancel(self) -> None:
        self.stop.set()

    def late(self) -> bool:
        """The backend's deadline test (a single attribute read: safe while it runs)."""
        return past(self.deadline)


def request_key(req: InfillRequest) -> tuple:
    """What a request asks (its deadline is when, not what: a prefetch with none and the request
    it anticipates share a key)."""
    segs = tuple(
        ("\0hole", s.max_tokens, s.min_tokens, s.single_line, s.stop) if isinstance(s, Hole) else s
        for s in req.segments
    )
    return (
        segs,
        req.steps,
        req.candidates,
        req.temperature,
        req.schedule,
        req.threshold,
        req.seed,
        req.want_trajectory,
        req.end_rule,
        req.length_estimate,
        req.reuse_context,
        req.language,  # the stop rules read it
    )


@dataclass
class Stats:
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    superseded: int = 0
    cache_hits: int = 0
    typed_through: int = 0
    context_reused: int = 0  # completions whose context encoding was reused (backend-reported)
    # of those, completions with a header (the repository context) whose encoding was kept
    header_reused: int = 0
    fallbacks: int = 0  # second decodes ending at the most confident place (pipeline.py)
    deadline_cuts: int = 0  # multi-line fills ended at a line end by the deadline (pipeline.py)
    prefetched: int = 0  # speculative fills started (lsp_server/prefetch.py)
    prefetch_used: int = 0  # requests answered by one: taken over while running, or cached
    errors: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    by_label: dict = field(default_factory=dict)  # label -> deque of latencies

    def add_latency(self, ms: float, label: str | None) -> None:
        self.latencies_ms.append(ms)
        if label is not None:
            self.by_label.setdefault(label, deque(maxlen=LATENCY_WINDOW)).append(ms)

    def percentile(self, q: float, data=None) -> float | None:
        data = sorted(self.latencies_ms if data is None else data)
        if not data:
            return None
        return round(data[min(len(data) - 1, int(q * len(data)))], 1)

    def summary(self) -> dict:
        out = {
            "p50": self.percentile(0.5),
            "p95": self.percentile(0.95),
            "n": len(self.latencies_ms),
        }
        out["byKind"] = {
            k: {"p50": self.percentile(0.5, d), "p95": self.percentile(0.95, d), "n": len(d)}
            for k, d in sorted(self.by_label.items())
        }
        return out


class Engine:
    """Runs InfillRequests on one worker thread; newer requests per document supersede older ones."""

    def __init__(self, loader: Loader = builtin_loader, cache_size: int = 256, threads: int = 0):
        self.loader = (
            loader  # (path, device, precision, threads) -> Infiller; the next load uses it
        )
        self.threads = threads
        self._cache: OrderedDict[tuple, list[InfillResult]] = OrderedDict()
        self._cache_size = cache_size
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._latest: dict[str, Job] = {}
        self._prefetched: set[tuple] = set()  # cached keys a speculative job filled, not yet used
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._generation = 0
        self.state = IDLE
        self.error: str | None = None
        self.infiller: Infiller | None = None
        self.loading: str | None = None  # the model path being loaded (aside, when one answers)
        self.load_error: str | None = None  # why the last load failed (None: it loaded)
        self.load_seconds: float | None = None
        self.model_path: str | None = None
        self.device: str | None = None
        self.stats = Stats()
        limit_malloc_arenas()
        self._worker = threading.Thread(target=self._run, name="parafill-engine", daemon=True)
        self._worker.start()

    # ---- loading ---------------------------------------------------------------------------
    def load(
        self,
        model_path: str | None = None,
        device: str | None = None,
        precision: str = "auto",
        on_done: Callable[[str | None, bool], None] | None = None,
        **options: str | None,
    ) -> None:
        """Start loading a model in the background; `precision` is the built-in backend's weight
        format (model.infill.PRECISIONS). With a model loaded, the new one loads aside while the
        old one keeps answering, and replaces it only once it has loaded: a load that fails
        (a missing directory, a truncated file, no CUDA) leaves the old model serving and says
        why in `load_error`. With none (the first load, or after a failed one), requests wait
        for this load. `on_done(error, kept)` is called on the loader thread when this load ends
        (unless a newer load replaced it): `error` None when it loaded, `kept` whether an older
        model still answers."""
        with self._lock:
            self._generation += 1
            gen = self._generation
            self.loading = model_path or DEFAULT_MODEL
            if self.state != READY or self.infiller is None:  # nothing to keep
                self._ready.clear()
                self.state, self.error = LOADING, None
                self.model_path, self.device = model_path, device
                self._cache.clear()
                self._prefetched.clear()
        extra = {k: v for k, v in options.items() if v}  # a published checkpoint's family, cache
        threading.Thread(
            target=self._load,
            args=(gen, model_path, device, precision, on_done, extra),
            daemon=True,
        ).start()

    def _load(
        self,
        gen: int,
        model_path: str | None,
        device: str | None,
        precision: str,
        on_done: Callable[[str | None, bool], None] | None,
        options: dict | None = None,
    ) -> None:
        t0 = time.perf_counter()
        try:
            infiller = self._build(model_path, device, precision, **(options or {}))
            error = None
        except CheckpointError as exc:
            infiller, error = None, str(exc)
        except Exception as exc:  # noqa: BLE001 - any load failure must leave the server up
            infiller, error = None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            if gen != self._generation:  # a newer load was asked for: this one is dropped
                return
            self.loading = None
            self.load_error = error
            kept = error is not None and self.state == READY and self.infiller is not None
            if error is None:  # switch to the new model
                self.infiller, self.state, self.error = infiller, READY, None
                self.model_path, self.device = model_path, device
                self.load_seconds = time.perf_counter() - t0
                self._cache.clear()  # the old model's answers
                self._prefetched.clear()
            elif not kept:
                self.infiller, self.state, self.error = None, ERROR, error
                self.load_seconds = time.perf_counter() - t0
        del infiller
        # the replaced model (or the failed load's leftovers); not where the process has turned
        # the collector off (the one-shot CLI: 0.05 s, and it exits soon)
        trim_memory(collect=gc.isenabled())
        # ready only now: a caller that exits once ready (the CLI) must not find this thread
        # still in torch's or the collector's code while the interpreter shuts down
        self._ready.set()
        if error is not None:  # (info: the CLI says it once itself, the server shows it)
            log.info("loading model %s failed: %s", model_path or DEFAULT_MODEL, error)
        if on_done is not None:
            on_done(error, kept)

    def _build(
        self, model_path: str | None, device: str | None, precision: str, **options: str
    ) -> Infiller:
        device = None if device in (None, "auto") else device
        return self.loader(model_path, device, precision, self.threads, **options)

    def use_threads(self, threads: int) -> None:
        """A new `threads` setting for the loaded model (and the next one loaded), without
        loading it again."""
        self.threads = threads
        if self.infiller is not None:
            cpu_threads.apply(self.infiller, threads)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the load finished (ready or error); True when ready."""
        self._ready.wait(timeout)
        return self.state == READY

    @property
    def model_name(self) -> str | None:
        return getattr(self.infiller, "name", None) if self.infiller is not None else None

    @property
    def model_device(self) -> str | None:
        return (
            str(getattr(self.infiller, "device", self.device))
            if self.infiller is not None
            else None
        )

    def count(self, stat: str, n: int = 1) -> None:
        """Add to a statistic from another thread (the server's event loop): the worker thread
        updates the same counters, always under the lock."""
        with self._lock:
            setattr(self.stats, stat, getattr(self.stats, stat) + n)

    # ---- requests --------------------------------------------------------------------------
    def submit(
        self,
        doc: str,
        req: InfillRequest,
        label: str | None = None,
        speculative: bool = False,
    ) -> Job:
        """Queue a request; an older pending/running request for `doc` is superseded. A
        `speculative` one (a prefetch) is cancelled by any later real request, for any document,
        except the same request (request_key) for its document, which takes the running job
        over, with the request's deadline; the same request as a running real one joins it.
        Results that a deadline cut are not cached."""
        key = request_key(req)
        job = Job(doc, req, key, label=label, speculative=speculative, deadline=req.deadline)
        job.waiters = 0 if speculative else 1
        with self._lock:
            old = self._latest.get(doc)
            if old is not None and not old.future.done():
                if old.speculative and not speculative and old.key == key and not old.stop.is_set():
                    old.speculative = False
                    old.adopted = time.perf_counter()
                    old.deadline = req.deadline
                    old.waiters += 1
                    self.stats.requests += 1
                    self.stats.prefetch_used += 1
                    return old
                if speculative and not old.speculative:
                    job.future.cancel()  # a prefetch never stops a fill someone asked for
                    return job
                if not speculative and old.key == key and not old.stop.is_set():
                    self.stats.requests += 1  # the same request again (an editor asking twice):
                    old.waiters += 1  # it waits for the run under way, with that run's deadline
                    return old
                old.cancel()
                self.stats.superseded += not old.speculative
            if not speculative:
                self.stats.requests += 1
                for other in self._latest.values():
                    if other.speculative and not other.future.done():
                        other.cancel()
            cached = self._cache.get(key) if self.cache_size > 0 else None
            if cached is not None:
                self._cache.move_to_end(key)
                job.future.set_result(cached)
                if not speculative:
                    self.stats.cache_hits += 1
                    if key in self._prefetched:
                        self._prefetched.discard(key)
                        self.stats.prefetch_used += 1
                return job
            self.stats.prefetched += speculative
            self._latest[doc] = job
        self._queue.put(job)
        return job

    def release(self, job: Job) -> None:
        """A request stopped waiting for `job` (its client cancelled it): the job is cancelled
        once no request waits for it any more (another may have joined it)."""
        with self._lock:
            job.waiters -= 1
            if job.waiters <= 0:
                job.cancel()

    def forget(self, doc: str) -> None:
        """A document closed: its running or queued jobs stop, and nothing of it is kept."""
        with self._lock:
            for key in (doc, doc + "#fill"):
                job = self._latest.pop(key, None)
                if job is not None and not job.future.done():
                    job.cancel()

    @property
    def cache_size(self) -> int:
        return self._cache_size

    @cache_size.setter
    def cache_size(self, n: int) -> None:
        """Entries kept (0: no cache); lowering it evicts at once."""
        with self._lock:
            self._cache_size = n
            while len(self._cache) > max(0, n):
                self._prefetched.discard(self._cache.popitem(last=False)[0])

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._execute(job)
            trim_memory()  # well under a millisecond; keeps the RSS near its post-load level

    def _execute(self, job: Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        while not self._ready.wait(0.05):  # the model is still loading
            if job.stop.is_set():
                break
        try:
            if job.stop.is_set():
                raise InfillCancelled()
            if self.state != READY or self.infiller is None:
                raise ModelUnavailable(self.error or "model not loaded")
            t0 = time.perf_counter()
            infiller = self.infiller  # (a model switch while it runs: its answer is not cached)
            results = infiller.infill(job.request, should_stop=job.stop.is_set, late=job.late)
            elapsed = (time.perf_counter() - t0) * 1000
            timing = getattr(infiller, "last_timing", {})
            if timing.get("context_reused"):
                with self._lock:
                    self.stats.context_reused += 1
                    self.stats.header_reused += bool(timing.get("header_kept"))
            log.info(
                "%s fill %.0f ms (queued %.0f ms), %s passes: %s",
                ("prefetch " if job.speculative else "") + (job.label or "model"),
                elapsed,
                (t0 - job.submitted) * 1000,
                results[0].steps_used if results else 0,
                timing,
            )
        # the future is settled under the lock, so that a request taking a prefetch over (in
        # submit) sees it either running or done, never done but uncounted
        except InfillCancelled as exc:
            with self._lock:
                self.stats.cancelled += not job.speculative
                job.future.set_exception(_without_frames(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a backend error goes to the caller's future
            with self._lock:
                self.stats.errors += 1
                job.future.set_exception(_without_frames(exc))
            return
        with self._lock:
            if not job.speculative:  # the statistics are of fills someone asked for
                if job.adopted is not None:  # a prefetch taken over: the wait since then
                    elapsed = min(elapsed, (time.perf_counter() - job.adopted) * 1000)
                self.stats.completed += 1
                self.stats.add_latency(elapsed, job.label)
            cut = deadline_cut(results)  # depends on timing
            if self._cache_size > 0 and not cut and infiller is self.infiller:
                self._cache[job.key] = results
                if job.speculative:
                    self._prefetched.add(job.key)
                while len(self._cache) > self._cache_size:
                    self._prefetched.discard(self._cache.popitem(last=False)[0])
            job.future.set_result(results)

    def run(
        self, req: InfillRequest, doc: str = "\0cli", timeout: float | None = None
    ) -> list[InfillResult]:
        """Synchronous helper (CLI): wait for the load, run one request."""
        return self.submit(doc, req).future.result(timeout)

    def close(self) -> None:
        for job in list(self._latest.values()):
            job.cancel()
        self._queue.put(None)

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "state": self.state,
            "error": self.error,
            "model": self.model_name,
            "modelPath": self.model_path,
            "device": self.model_device or self.device,
            "precision": getattr(self.infiller, "precision", None),
            "threads": self.threads or cpu_threads.base_threads(),
            "adaptiveThreads": bool(getattr(self.infiller, "adaptive_threads", False)),
            # the checkpoint ships a length head for line fills (model/length.py)
            "lengthSignal": bool(getattr(self.infiller, "has_length_signal", False)),
            "loadSeconds": None if self.load_seconds is None else round(self.load_seconds, 3),
            # a model being loaded (aside while `modelPath` answers), and why the last load
            # failed (the model of `modelPath` then still answers, if there was one)
            "loading": self.loading,
            "loadError": self.load_error,
            "requests": s.requests,
            "completed": s.completed,
            "cancelled": s.cancelled,
            "superseded": s.superseded,
            "cacheHits": s.cache_hits,
            "typedThrough": s.typed_through,
            "contextReused": s.context_reused,
            "headerReused": s.header_reused,
            "fallbacks": s.fallbacks,
            "deadlineCuts": s.deadline_cuts,
            "prefetched": s.prefetched,
            "prefetchUsed": s.prefetch_used,
            "errors": s.errors,
            "cacheEntries": len(self._cache),
            "latencyMs": s.summary(),
            # the last completion's model time (the editors' status bars show it)
            "lastLatencyMs": round(s.latencies_ms[-1], 1) if s.latencies_ms else None,
        }


@dataclass
class Suggestion:
    cursor: int
    before: str  # text just before the cursor when it was made
    after: str  # text just after the cursor
    items: list[Any]  # postprocess.Candidate, best first


class TypingThrough:
    """Remembers the last suggestion per document and answers with its rest while the user types
    exactly what it suggested (no model run)."""

    def __init__(self) -> None:
        self._last: dict[str, Suggestion] = {}

    def remember(self, doc: str, text: str, cursor: int, items: list[Any]) -> None:
        if not items:
            self._last.pop(doc, None)
            return
        self._last[doc] = Suggestion(
            cursor,
            text[max(0, cursor - TYPE_THROUGH_CONTEXT) : cursor],
            text[cursor : cursor + TYPE_THROUGH_CONTEXT],
            items,
        )

    def forget(self, doc: str) -> None:
        self._last.pop(doc, None)

    def rest(self, doc: str, text: str, cursor: int) -> list[tuple[Any, str]]:
        """[(candidate, remaining text)] when what was typed since is a prefix of a candidate;
        the remaining text is empty where it was all typed (or taken)."""
        last = self._last.get(doc)
        if last is None or cursor <= last.cursor:
            return []
        c0 = last.cursor
        if text[max(0, c0 - TYPE_THROUGH_CONTEXT) : c0] != last.before:
            return []
        if text[cursor : cursor + TYPE_THROUGH_CONTEXT] != last.after:
            return []
        typed = text[c0:cursor]
        out = []
        for cand in last.items:
            if cand.text.startswith(typed):
                out.append((cand, cand.text[len(typed) :]))
        return out
