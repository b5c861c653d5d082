"""A published diffusion coder's checkpoint (a tiny random DreamOn, built in its published layout
by tests/family_checkpoints.py) end to end: the language server (pytest-lsp, a real server
process) loads it from `modelPath`, answers inline completions and the fill command, shows the
denoising (the fill grows from DreamOn's four masks), keeps it answering when a corrupt
checkpoint is asked for, and goes back to the shipped model; `parafill serve-model --model DIR`
on Ray Serve answers its FIM and native endpoints with what the same request gives in process.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx
import pytest
import pytest_lsp
from family_checkpoints import build_dream, build_open_dcoder
from lsp_helpers import (
    as_dict,
    cursor_of,
    fill_two_holes,
    inline_params,
    open_doc,
    real_server_command,
    server_env,
)
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from test_model_server import ModelServer

from model.families.infiller import FamilyInfiller
from model.interface import Hole, InfillRequest, request_to_json

CKPT_DIR = Path(tempfile.mkdtemp(prefix="parafill-families-"))
DREAMON = build_dream(CKPT_DIR / "dreamon", variant="dreamon")
CONFIG = ClientServerConfig(server_command=real_server_command(), server_env=server_env())
TIMEOUT_S = 120
lsp = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            initialization_options={"modelPath": str(DREAMON), "debounceMs": 0},
        )
    )
    lsp_client.applied_edits = []

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):
        lsp_client.applied_edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    yield
    await lsp_client.shutdown_session()


async def request(client: LanguageClient, method: str, params: dict) -> dict:
    return as_dict(await client.protocol.send_request_async(method, params))


async def until(client: LanguageClient, check, timeout: float = TIMEOUT_S) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        st = await request(client, "parafill/status", {})
        if check(st) or loop.time() > end:
            return st
        await asyncio.sleep(0.2)


async def inline(client: LanguageClient, uri: str, line: int, col: int):
    return await asyncio.wait_for(
        client.text_document_inline_completion_async(inline_params(uri, line, col)), TIMEOUT_S
    )


@lsp
async def test_language_server_runs_a_dreamon_checkpoint(client: LanguageClient):
    st = await until(client, lambda s: s["state"] == "ready")
    assert st["state"] == "ready", st
    assert st["model"].startswith("dream:"), st["model"]
    text, line, col = cursor_of("def add(a, b):\n    return |\n\n\nprint(add(1, 2))\n")
    uri = "file:///f/add.py"
    open_doc(client, uri, text)
    await inline(client, uri, line, col)
    made = await request(client, "parafill/steps", {"uri": uri})
    assert made is not None and made["stepsUsed"] == len(made["steps"]) >= 1
    # DreamOn's canvas starts from four masks and commits by confidence
    assert made["mask"] in made["steps"][0]
    assert made["mask"] not in made["steps"][-1]


@lsp
async def test_fill_command_with_two_holes(client: LanguageClient):
    res, starts = await fill_two_holes(client, "file:///f/holes.py")
    assert res["applied"] is True and len(res["fills"]) == 2
    assert starts == [(1, 11), (5, 11)]


@lsp
async def test_a_corrupt_checkpoint_keeps_the_model_then_back_to_the_shipped_one(client):
    bad = build_dream(CKPT_DIR / "bad", variant="dream-coder")
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    before = (await request(client, "parafill/status", {}))["model"]
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"modelPath": str(bad)}})
    )
    st = await until(client, lambda s: s.get("loadError"))
    assert "corrupt" in (st.get("loadError") or ""), st
    assert st["model"] == before and st["state"] == "ready"
    text, line, col = cursor_of("x = |\n")
    open_doc(client, "file:///f/x.py", text)
    await inline(client, "file:///f/x.py", line, col)  # the DreamOn model still answers
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": {"modelPath": None}})
    )
    st = await until(
        client, lambda s: not s["model"].startswith("dream:") and s["state"] == "ready"
    )
    assert not st["model"].startswith("dream:"), st


def test_model_server_serves_a_dreamon_checkpoint():
    server = ModelServer("--model", str(DREAMON), "--device", "cpu")
    try:
        local = FamilyInfiller(DREAMON, "cpu", "fp32")
        prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
        req = InfillRequest([prefix, Hole(16), suffix])
        want = local.infill(req)[0].fills[0]
        got = httpx.post(
            server.url + "/v1/infill", json=request_to_json(req), timeout=TIMEOUT_S
        ).json()
        assert got["results"][0]["fills"][0] == want, got
        fim = httpx.post(
            server.url + "/v1/fim/completions",
            json={"prompt": prefix, "suffix": suffix, "max_tokens": 16},
            timeout=TIMEOUT_S,
        )
        assert fim.status_code == 200, fim.text
        choice = fim.json()["choices"][0]
        assert isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    finally:
        server.stop()


def test_model_server_takes_the_family_and_the_pass_cache():
    """Open-dCoder's config says plain qwen2: --model-family says what it is; --pass-cache dual
    reaches the replica's infiller (its answer is the dual-cache one, not the exact one)."""
    path = build_open_dcoder(CKPT_DIR / "open-dcoder")
    server = ModelServer(
        "--model", str(path), "--model-family", "open-dcoder", "--pass-cache", "dual", "--no-ray"
    )
    try:
        req = InfillRequest(["def add(a, b):\n    return ", Hole(12), "\n"], candidates=2, seed=3)
        local = FamilyInfiller(path, "cpu", None, family="open-dcoder", cache="dual")
        want = [r.fills for r in local.infill(req)]
        local.cache = "exact"
        assert [r.fills for r in local.infill(req)] != want  # (so the check below can fail)
        got = httpx.post(server.url + "/v1/infill", json=request_to_json(req), timeout=TIMEOUT_S)
        assert got.status_code == 200, got.text
        assert [r["fills"] for r in got.json()["results"]] == want
    finally:
        server.stop()
