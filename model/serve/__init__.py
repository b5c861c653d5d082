"""The model server (`parafill serve-model`): a FastAPI application deployed with Ray Serve that
many editors' language servers (the remote backend, model/backends/remote.py) and any
`/v1/fim/completions` client share. app.py: the endpoints; state.py: a replica's state, queue and
model thread; batching.py: batches and `infill_batch`; calibrate.py: the batch size by
measurement; interleave.py: cheaper requests between a running one's steps; bodies.py: reading a
body safely; guard.py: the browser rules (JSON POSTs, Host, CORS); fim.py: the Mercury-compatible
shape; options.py: options and limits; deployment.py: Ray Serve; metrics.py: Prometheus.

Needs the `serve` extra (`pip install parafill[serve]`); nothing else in `model/` imports it.
"""
