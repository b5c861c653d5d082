"""Finding and checking a published checkpoint before anything is loaded.

Owns: resolving `modelPath` / `--model` (a local directory as `hf download REPO --local-dir DIR`
leaves it, or a hub id already in the local hub cache; never a download), reading config.json,
telling the family from it (`architectures`, `model_type`, or an explicit `modelFamily`),
checking the weight files (safetensors only, headers and sizes) and the tokenizer files, and the
memory check that refuses a model the machine cannot hold before a byte of it is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from model.interface import CheckpointError

# family name -> what its config says (model_type values, architectures)
FAMILIES = ("parafill", "dream", "open-dcoder", "llada")
SHIPPED_MODEL_TYPE = "parafill_mdlm"
BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I32": 4, "I64": 8, "BOOL": 1}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory that passed the file checks."""

    path: Path
    family: str  # one of FAMILIES
    config: dict
    shards: list[Path]
    params: int  # number of weights (from the safetensors headers)


def hub_cache_dirs() -> list[Path]:
    """Where the Hugging Face hub keeps downloads on this machine (HF_HUB_CACHE, HF_HOME/hub,
    ~/.cache/huggingface/hub), in that order."""
    out = []
    if os.environ.get("HF_HUB_CACHE"):
        out.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        out.append(Path(os.environ["HF_HOME"]) / "hub")
    out.append(Path.home() / ".cache" / "huggingface" / "hub")
    return out


def resolve(spec: str | os.PathLike) -> Path:
    """A checkpoint directory from a path or a hub id (`org/name`) already downloaded into the
    local hub cache. Nothing is downloaded: a hub id that is not there is a CheckpointError that
    gives the command that fetches it."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    text = str(spec)
    parts = text.split("/")
    looks_like_id = len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))
    if looks_like_id:
        for cache in hub_cache_dirs():
            repo = cache / f"models--{parts[0]}--{parts[1]}"
            snap = _snapshot(repo)
            if snap is not None:
                return snap
        raise CheckpointError(
            f"checkpoint {text!r} is not a directory and not in the local hub cache "
            f"({', '.join(str(c) for c in hub_cache_dirs())}); Parafill never downloads a model. "
            f"Fetch it with: hf download {text} --local-dir <DIR>, then point modelPath at DIR"
        )
    raise CheckpointError(f"checkpoint directory not found: {path}")


def _snapshot(repo: Path) -> Path | None:
    """The snapshot a hub cache entry's refs/main names, else its newest snapshot."""
    snaps = repo / "snapshots"
    if not snaps.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = snaps / ref.read_text().strip()
        if snap.is_dir():
            return snap
    found = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"checkpoint file missing: {cfg_file} (is this a model directory?)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file is not valid JSON: {cfg_file} ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_file}: expected a JSON object")
    return cfg


def family_of(cfg: dict, cfg_file: Path, override: str | None = None) -> str:
    """The family a config belongs to. `override` (the `modelFamily` setting) wins: Open-dCoder's
    config says plain qwen2, like any autoregressive Qwen2, so it cannot be told apart."""
    if override:
        if override not in FAMILIES:
            raise CheckpointError(f"unknown model family {override!r}; expected one of {FAMILIES}")
        return override
    mtype = str(cfg.get("model_type", "")).lower()
    archs = [str(a) for a in cfg.get("architectures") or []]
    if mtype == SHIPPED_MODEL_TYPE:
        return "parafill"
    if mtype == "dream" or "DreamModel" in archs:
        return "dream"
    if mtype == "llada" or any(a.startswith("LLaDA") for a in archs):
        return "llada"
    if mtype == "qwen2":
        raise CheckpointError(
            f"{cfg_file}: a plain qwen2 config; if this is a diffusion checkpoint such as "
            "Open-dCoder, say so with the setting modelFamily: 'open-dcoder' (CLI --model-family)"
        )
    if cfg.get("auto_map"):
        raise CheckpointError(
            f"{cfg_file}: model_type {cfg.get('model_type')!r} ({', '.join(archs) or 'no architectures'}) "
            "is implemented only by the checkpoint's own Python files (remote code), which Parafill "
            f"never runs; supported families: {', '.join(FAMILIES)}"
        )
    raise CheckpointError(
        f"{cfg_file}: unknown model family (model_type {cfg.get('model_type')!r}, "
        f"architectures {archs}); supported: {', '.join(FAMILIES)} (setting modelFamily)"
    )


def check_safetensors(f: Path) -> int:
    """Check one safetensors file (an 8-byte header length, a JSON header, then exactly the
    tensor bytes it lists); return its number of weights. CheckpointError names the file."""
    if not f.is_file():
        raise CheckpointError(f"checkpoint file missing: {f}")
    size = f.stat().st_size
    try:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > size - 8:
                raise ValueError("bad header length")
            header = json.loads(fh.read(n))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
        count = 0
        for v in tensors.values():
            numel = 1
            for d in v["shape"]:
                numel *= int(d)
            count += numel
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint file is corrupt: {f} ({e})") from None
    if 8 + n + end != size:
        raise CheckpointError(
            f"checkpoint file is truncated or corrupt: {f} (expected {8 + n + end} bytes, found {size})"
        )
    return count


def shards_of(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint (its index's shards, or model.safetensors).
    Pickled weights (*.bin, *.pt) are refused: nothing is unpickled."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint index is corrupt: {index} ({e})") from None
        return [path / n for n in names]
    single = path / "model.safetensors"
    if not single.is_file():
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(
            p.name for p in path.glob("*.pt")
        )
        if pickled:
            raise CheckpointError(
                f"{path}: weights only as pickled files ({', '.join(pickled[:3])}); Parafill "
                "loads safetensors only"
            )
    return [single]


def inspect(spec: str | os.PathLike, family: str | None = None) -> Checkpoint:
    """Resolve and check a checkpoint without loading it."""
    path = resolve(spec)
    cfg = read_config(path)
    fam = family_of(cfg, path / "config.json", family)
    shards = shards_of(path)
    params = sum(check_safetensors(s) for s in shards)
    return Checkpoint(path, fam, cfg, shards, params)


def available_memory(device: str) -> int | None:
    """Bytes free for a model on `device` (MemAvailable on the CPU, free GPU memory on CUDA);
    None when it cannot be read."""
    if device.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info()[0])
        except Exception:  # noqa: BLE001 - no CUDA runtime: no check
            return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def needed_memory(params: int, precision: str) -> int:
    """Bytes a model of `params` weights needs while it loads and runs: fp32 at 4 bytes a
    weight; bf16 at 2; int8 is quantized from fp32 one layer at a time, so the fp32 copy is the
    peak. Plus a tenth for activations and the runtime."""
    per = {"fp32": 4, "int8": 4, "bf16": 2}.get(precision, 4)
    return int(params * per * 1.1) + (256 << 20)


def check_memory(ck: Checkpoint, device: str, precision: str) -> None:
    """Refuse, before loading, a model that would not fit (instead of swapping): on the device,
    and in the host's memory, which holds the weights as read before they move to a GPU."""
    _check_fits(ck, device, precision)
    if device.startswith("cuda"):
        _check_fits(ck, "cpu", precision)


def _check_fits(ck: Checkpoint, device: str, precision: str) -> None:
    need, free = needed_memory(ck.params, precision), available_memory(device)
    if free is not None and need > free:
        gib = 1 << 30
        raise CheckpointError(
            f"{ck.path}: a {ck.params / 1e9:.2f}B-weight model in {precision} needs about "
            f"{need / gib:.1f} GiB on {device}, and {free / gib:.1f} GiB is available; "
            "use a smaller checkpoint, int8 on the CPU, a GPU, or a model server (serve-model)"
        )


def is_shipped(spec: str | os.PathLike | None) -> bool:
    """Whether `spec` (None: the shipped weights) is a checkpoint of the shipped network's own
    format rather than a published family's (a directory without config.json counts as the
    shipped format: its loader names what is missing)."""
    if spec is None:
        return True
    path = resolve(spec)
    if not (path / "config.json").is_file():
        return True
    return read_config(path).get("model_type") == SHIPPED_MODEL_TYPE
