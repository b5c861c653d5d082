"""Parafill's masked-diffusion infill model: tokenizer, network, sampler, Infiller backends.

Never imports lsp_server or lsprotocol. The server reaches the model only through
`model.interface` (the seam) and `model.infill.load_infiller`. Importing it changes nothing in the
process: torch's OpenMP set-up (model/cpu_threads.py's `set_spin_count`) happens where the model
is loaded.
"""
