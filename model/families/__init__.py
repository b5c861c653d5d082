"""Published diffusion coders, run without their own code: one adapter per kind of checkpoint.

checkpoint.py finds and checks a checkpoint (directory or hub id in the local cache, family,
files, memory); tokens.py loads its tokenizer and finds special tokens by name; networks.py
builds its network from transformers' classes with attention both ways; specs.py says what
varies per family; infiller.py is the Infiller that lays requests out and runs the decoding
loops (model/sampler.py for fixed-length holes, model/growing.py for DreamOn's expand/delete).
"""
