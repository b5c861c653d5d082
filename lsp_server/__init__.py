"""Parafill's language server: LSP <-> domain translation around the diffusion infill model."""
