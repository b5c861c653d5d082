"""Infillers other than the built-in model: remote.py calls a model server over HTTP."""
