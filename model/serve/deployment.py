"""The model server on Ray Serve: the deployment (one replica = one model and one FastAPI app,
model/serve/app.py), its batching by `@serve.batch` with one queue per hole-length bucket, and
`serve_model`, which `parafill serve-model` runs: start (or join) Ray, `serve.run`, wait for
SIGINT/SIGTERM, shut down.

`build_app(args)` is the application builder for Ray Serve's own tools: `serve run
model.serve.deployment:build_app replicas=2` or a config file's `import_path` (docs/server.md).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import asdict, fields
from typing import Any

from ray import serve

from model.serve.app import create_app
from model.serve.batching import BatchItem, Outcome, bucket_of
from model.serve.metrics import Metrics
from model.serve.options import ServeOptions, check_options, load_model
from model.serve.state import ServerState, choose_batch

APP_NAME = "parafill"
log = logging.getLogger("parafill.serve")
# batches go on to ServerState.run_batch as Ray forms them (any number at once: the replica's
# own queue of admitted requests is the limit); there, what waits while the model is busy joins
# the next batch
BATCH_DEFAULTS = {
    "max_batch_size": 8,
    "batch_wait_timeout_s": 0.005,
    "max_concurrent_batches": 1024,
}


@serve.deployment(name="ParafillModel", graceful_shutdown_timeout_s=5)
@serve.ingress()
class ParafillModel:
    """One replica: the model, its metrics, and a batch queue per bucket."""

    async def __init__(self, options: dict[str, Any]):
        opts = ServeOptions(**options)
        ctx = serve.get_replica_context()
        infiller = load_model(opts)
        metrics = Metrics(ctx.replica_tag, opts.model_id)
        batch = choose_batch(infiller, opts)
        self.state = ServerState(infiller, opts, metrics, batch=batch)
        self.state.submit = self.submit
        self.queues = {"line": self.batch_line, "block": self.batch_block, "long": self.batch_long}
        for queue in self.queues.values():
            queue.set_max_batch_size(self.state.max_batch_size)
            queue.set_batch_wait_timeout_s(opts.batch_wait_ms / 1000)

    def __serve_build_asgi_app__(self):
        return create_app(self.state)

    async def submit(self, item: BatchItem) -> Outcome:
        """Hand `item` to its bucket's queue; the batch it starts waits `batch_wait_s()` for
        more (none for a request alone). Ray reads the wait when the batch's first request is
        taken, which is after this put, on this same event loop."""
        queue = self.queues[bucket_of(item.request)]
        queue.set_batch_wait_timeout_s(self.state.batch_wait_s())
        return await queue(item)

    # one @serve.batch queue per bucket (model/serve/batching.py BUCKETS): holes of similar
    # length go to the same batch
    @serve.batch(**BATCH_DEFAULTS)
    async def batch_line(self, items: list[BatchItem]) -> list[Outcome]:
        return await self.state.run_batch(items)

    @serve.batch(**BATCH_DEFAULTS)
    async def batch_block(self, items: list[BatchItem]) -> list[Outcome]:
        return await self.state.run_batch(items)

    @serve.batch(**BATCH_DEFAULTS)
    async def batch_long(self, items: list[BatchItem]) -> list[Outcome]:
        return await self.state.run_batch(items)


def deployment(
    opts: ServeOptions, replicas: int = 1, cpus_per_replica: float = 1, gpus_per_replica: float = 0
):
    """The bound application: `replicas` copies of the model, each admitting `max_queue`
    requests (Ray Serve's own limit is set just above, so the replica answers 429 itself)."""
    actor: dict[str, Any] = {"num_cpus": cpus_per_replica}
    if gpus_per_replica:
        actor["num_gpus"] = gpus_per_replica
    return ParafillModel.options(
        num_replicas=replicas,
        max_ongoing_requests=opts.max_queue + 8,
        ray_actor_options=actor,
    ).bind(asdict(opts))


def build_app(args: dict[str, Any]):
    """Application builder for `serve run` / Serve config files: `args` are ServeOptions fields
    plus `replicas`, `cpus_per_replica`, `gpus_per_replica`."""
    args = dict(args)
    names = {f.name for f in fields(ServeOptions)}
    scale = {k: float(args.pop(k)) for k in ("cpus_per_replica", "gpus_per_replica") if k in args}
    replicas = int(args.pop("replicas", 1))
    unknown = set(args) - set(names)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; expected {sorted(names)}")
    defaults = ServeOptions()

    def typed(key: str, value: Any) -> Any:
        default = getattr(defaults, key)
        return value if value is None or default is None else type(default)(value)

    opts = ServeOptions(**{k: typed(k, v) for k, v in args.items()})
    return deployment(opts, replicas, **scale)


def serve_model(
    opts: ServeOptions,
    host: str,
    port: int,
    replicas: int = 1,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_replica: float = 1,
    gpus_per_replica: float = 0,
    ready=print,
) -> None:
    """Run the model server until SIGINT or SIGTERM, then stop it and exit normally. Without
    `ray_address` a local Ray instance is started (and shut down at the end, with every process
    it started); with one, the app joins that cluster and is deleted from it at the end, the
    cluster left running. Options that cannot serve as asked refuse to start (exit 2)."""
    import ray

    try:
        check_options(opts)
    except ValueError as exc:
        print(f"parafill: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    stop = threading.Event()

    def on_signal(*_) -> None:
        stop.set()

    def own_signals() -> None:
        # ray.init installs a SIGTERM handler of its own (sys.exit from wherever the main thread
        # is, and its core worker's abort): SIGTERM stops this server as SIGINT does
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)

    own_signals()
    own = ray_address is None
    ray.init(
        address=ray_address,
        num_cpus=num_cpus if own else None,
        include_dashboard=False,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    own_signals()
    try:
        serve.start(http_options={"host": host, "port": port})
        app = deployment(opts, replicas, cpus_per_replica, gpus_per_replica)
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        own_signals()
        ready(
            f"parafill model server on http://{host}:{port} ({replicas} replica(s), pid {os.getpid()})"
        )
        while not stop.wait(0.5):
            pass
    finally:
        try:
            if own:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            if own:
                ray.shutdown()
