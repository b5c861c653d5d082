"""Parafill's masked-diffusion infill model: tokenizer, network, sampler, Infiller backends.

Never imports lsp_server or lsprotocol. The server reaches the model only through
`model.interface` (the seam) and `model.infill.load_infiller`.
"""

from model import cpu_threads  # noqa: F401  (sets libgomp's spin count before torch loads)
