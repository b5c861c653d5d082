"""The model server (`parafill serve-model`): a FastAPI application deployed with Ray Serve that
many editors' language servers (the remote backend, model/backends/remote.py) and any
`/v1/fim/completions` client share. app.py: the endpoints; deployment.py: Ray Serve; batching.py:
batches and `infill_batch`; fim.py: the Mercury-compatible shape; metrics.py: Prometheus.

Needs the `serve` extra (`pip install parafill[serve]`); nothing else in `model/` imports it.
"""
