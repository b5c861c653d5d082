"""`parafill doctor`: checks what Parafill needs, in order, and says what to fix.

Each check is a small function returning a `Check` (ok or not, what was found, what to do); the
last two start the real language server (`parafill serve`, over stdio) and time its start and
its first completion, as an editor would see them.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MIN_PYTHON = (3, 10)
SERVER_TIMEOUT_S = 120.0
PROBE = "def area(width, height):\n    return \n"


@dataclass
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""


def check_python() -> Check:
    v = sys.version_info
    found = f"{v.major}.{v.minor}.{v.micro} at {sys.executable}"
    if (v.major, v.minor) < MIN_PYTHON:
        return Check("python", False, found, "Parafill needs Python 3.10 or newer")
    return Check("python", True, found)


def check_torch() -> Check:
    try:
        import torch
    except ImportError:
        return Check(
            "torch",
            False,
            "not installed",
            "pip install torch==2.13.0 (the CPU build), then parafill",
        )
    from model import quantize

    found = f"{torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}"
    found += f", int8 CPU engine {'yes' if quantize.available() else 'no'}"
    if not quantize.available() and not torch.cuda.is_available():
        return Check(
            "torch", True, found, "no int8 engine: the model runs in fp32, about 2x slower"
        )
    return Check("torch", True, found)


def check_checkpoint(path: str | None, family: str | None = None) -> Check:
    from model.families.checkpoint import is_shipped
    from model.infill import WEIGHTS_DIR, validate_checkpoint
    from model.interface import CheckpointError

    try:
        published = family not in (None, "parafill") or not is_shipped(path)
    except CheckpointError as exc:
        return Check("checkpoint", False, str(exc), "check --model: a directory or a cached hub id")
    if published:
        return check_published(path or "", family)
    where = Path(path) if path else WEIGHTS_DIR
    try:
        cfg = validate_checkpoint(where)
    except CheckpointError as exc:
        fix = "reinstall parafill (the shipped weights are in model/weights/)"
        if path:
            fix = "check --model: a directory with config.json, tokenizer.json and *.safetensors"
        return Check("checkpoint", False, str(exc), fix)
    size = sum(f.stat().st_size for f in where.glob("*.safetensors")) / 2**20
    layers, width = cfg.get("num_hidden_layers"), cfg.get("hidden_size")
    return Check("checkpoint", True, f"{where} ({layers} layers x {width}, {size:.0f} MiB)")


def check_published(path: str, family: str | None = None) -> Check:
    """A published diffusion coder's checkpoint: its family, files, tokenizer and special
    tokens, and whether this machine has the memory for it (nothing is loaded)."""
    from model.families.checkpoint import available_memory, inspect, needed_memory
    from model.families.specs import SPECS
    from model.families.tokens import FamilyTokenizer, find_specials
    from model.interface import CheckpointError

    try:
        ck = inspect(path, family)
        spec = SPECS[ck.family]
        tok = FamilyTokenizer(ck.path)
        ids = find_specials(tok, spec.mask, spec.end, spec.begin, spec.expand)
    except CheckpointError as exc:
        return Check(
            "checkpoint",
            False,
            str(exc),
            "check --model: the shipped format, or a published coder's directory as "
            "`hf download` leaves it (docs/bigger-models.md)",
        )
    decoding = "expand/delete (DreamOn)" if ids.expand is not None else "fixed-length holes"
    found = (
        f"{ck.path}: {ck.family} family, {ck.params / 1e9:.2f}B weights in {len(ck.shards)} "
        f"file(s), tokenizer {tok.vocab_size} tokens, mask {ids.mask}, end {ids.end}, {decoding}"
    )
    gib = 1 << 30
    lines = []
    for device, precision in (("cpu", "int8"), ("cpu", "fp32"), ("cuda", "bf16")):
        need, free = needed_memory(ck.params, precision), available_memory(device)
        have = "?" if free is None else f"{free / gib:.1f}"
        lines.append(f"{device} {precision} needs {need / gib:.1f} GiB (free {have})")
    found += "; " + ", ".join(lines)
    free_cpu = available_memory("cpu")
    if free_cpu is not None and needed_memory(ck.params, "int8") > free_cpu:
        return Check("checkpoint", True, found, "too big for this machine's memory: use a GPU")
    return Check("checkpoint", True, found)


def check_grammars() -> Check:
    from lsp_server.syntax import LANGUAGES, get_language

    missing = [g for g in LANGUAGES if get_language(g) is None]
    found = ", ".join(f"{g} {'ok' if g not in missing else 'MISSING'}" for g in LANGUAGES)
    if missing:
        wheels = " ".join(f"tree-sitter-{g if g != 'tsx' else 'typescript'}" for g in missing)
        return Check(
            "grammars",
            False,
            found,
            f"pip install {wheels} (regions are planned without a tree meanwhile)",
        )
    return Check("grammars", True, found)


def check_server(
    model: str | None, timeout: float = SERVER_TIMEOUT_S, family: str | None = None
) -> list[Check]:
    """Start `parafill serve`, wait for the model, ask one completion; two checks with times."""
    from lsp_server.framing import Frame, FrameReader

    cmd = [sys.executable, "-m", "lsp_server.cli", "serve"] + (["--model", model] if model else [])
    cmd += ["--model-family", family] if family else []
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        return [Check("server", False, str(exc), "reinstall parafill")]
    reader, pending = FrameReader(), []

    def send(msg: dict) -> None:
        body = json.dumps(msg).encode()
        proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        proc.stdin.flush()

    def answer(msg_id: int) -> dict:
        while time.perf_counter() - t0 < timeout:
            for frame in pending:
                msg = json.loads(frame)
                if msg.get("id") == msg_id:
                    pending.remove(frame)
                    return msg
            left = timeout - (time.perf_counter() - t0)
            if not select.select([proc.stdout], [], [], max(0.0, left))[0]:
                break  # nothing came in time
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("the server exited: " + proc.stderr.read().decode()[-500:])
            pending.extend(e.body for e in reader.feed(chunk) if isinstance(e, Frame))
        raise TimeoutError(f"no answer in {timeout:.0f} s")

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}})
        answer(1)
        started = time.perf_counter() - t0
        send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        uri = "file:///parafill-doctor/probe.py"
        doc = {"uri": uri, "languageId": "python", "version": 1, "text": PROBE}
        send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": doc}})
        t1 = time.perf_counter()
        params = {
            "textDocument": {"uri": uri},
            "position": {"line": 1, "character": 11},
            "context": {"triggerKind": 1},
        }
        send(
            {"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion", "params": params}
        )
        items = (answer(2).get("result") or {}).get("items", [])
        first = time.perf_counter() - t1
        send({"jsonrpc": "2.0", "id": 3, "method": "parafill/status", "params": {}})
        status = answer(3).get("result") or {}
        send({"jsonrpc": "2.0", "id": 4, "method": "shutdown"})
        answer(4)
        send({"jsonrpc": "2.0", "method": "exit"})
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        proc.kill()
        return [Check("server", False, str(exc), "run `parafill serve` by hand to see its error")]
    finally:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    checks = [Check("server start", True, f"answered initialize in {started:.2f} s")]
    if status.get("state") != "ready":
        error = status.get("error") or status.get("loadError") or "model not loaded"
        checks.append(Check("first completion", False, error, "see the checkpoint check above"))
        return checks
    shown = repr(items[0]["insertText"]) if items else "no suggestion"
    found = f"{first:.2f} s (model load included), {shown}"
    found += f"; {status.get('precision')} on {status.get('device')}"
    checks.append(Check("first completion", True, found))
    return checks


def run(model: str | None = None, server: bool = True, family: str | None = None) -> list[Check]:
    checks = [check_python(), check_torch()]
    if checks[-1].found == "not installed":
        return checks
    checks += [check_checkpoint(model, family), check_grammars()]
    if server and checks[2].ok:
        checks += check_server(model, family=family)
    return checks


def report(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{'ok ' if c.ok else 'BAD'} {c.name:17s} {c.found}")
        if c.fix:
            lines.append(f"    {'fix' if not c.ok else 'note'}: {c.fix}")
    bad = sum(not c.ok for c in checks)
    lines.append("all good" if not bad else f"{bad} problem(s) to fix")
    return "\n".join(lines)
