"""Parafill's training: the corpus (data.py), the masked-diffusion objective and loop (train.py),
the length head's training side (length_train.py), the network as a transformers model (hf.py),
and the prepared GPU recipe (gpu_recipe.sh). Scripts, never imported by the server: what the
server runs lives in model/.
"""
