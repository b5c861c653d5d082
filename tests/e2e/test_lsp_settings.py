"""Bad settings never cost the working model or half-apply (issue #16 item 6), on the real server
process (pytest-lsp): a model path that does not load (the fake backend's "missing..." paths; with
the shipped model also a truncated shard, a text file and `device: "cuda"` without CUDA) is
reported at once and the old model keeps answering; a new model loads aside; budgets the model
cannot hold and a log file that cannot be written are refused, with nothing else of that change
applied; an explicit request has a deadline of its own (explicitDeadlineMs).
"""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
import pytest_lsp
from lsp_helpers import (
    WEIGHTS,
    as_dict,
    cursor_of,
    fake_server_command,
    inline_params,
    open_doc,
    real_server_command,
    server_env,
    start_session,
)
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")
FAKE = ClientServerConfig(server_command=fake_server_command(), server_env=server_env())
REAL = ClientServerConfig(server_command=real_server_command(), server_env=server_env())
WAIT_S = 60  # a load on a busy 2-core machine


async def _init(client: LanguageClient, options: dict) -> None:
    await start_session(client, options)


@pytest_lsp.fixture(config=FAKE, scope="module")
async def client(lsp_client: LanguageClient):
    await _init(lsp_client, {})
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=FAKE, scope="module")
async def missing_client(lsp_client: LanguageClient):
    await _init(lsp_client, {"modelPath": "missing-first"})
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=REAL, scope="module")
async def real_client(lsp_client: LanguageClient):
    if not (WEIGHTS / "config.json").is_file():
        pytest.fail(f"the shipped checkpoint is missing: {WEIGHTS / 'config.json'}")
    await _init(lsp_client, {"prefetch": False})
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict:
    return as_dict(await client.protocol.send_request_async("parafill/status", {}))


def configure(client: LanguageClient, **settings) -> None:
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"parafill": settings})
    )


async def until(client: LanguageClient, check, timeout: float = WAIT_S) -> dict:
    """The server's status once `check(status)` holds (fails after `timeout`)."""
    end = time.monotonic() + timeout
    while True:
        st = await status(client)
        if check(st):
            return st
        assert time.monotonic() < end, f"status never came: {st}"
        await asyncio.sleep(0.05)


async def shown(client: LanguageClient, since: int, *words: str, timeout: float = WAIT_S) -> str:
    """The first window/showMessage after the first `since` holding every word (no request is
    sent meanwhile: the server reports on its own)."""
    end = time.monotonic() + timeout
    while True:
        for m in client.messages[since:]:
            if all(w in m.message for w in words):
                return m.message
        assert time.monotonic() < end, [m.message for m in client.messages[since:]]
        await asyncio.sleep(0.05)


async def inline(client: LanguageClient, uri: str, line: int, char: int, **kw) -> list[str]:
    res = await asyncio.wait_for(
        client.text_document_inline_completion_async(inline_params(uri, line, char, **kw)), WAIT_S
    )
    return [i.insert_text for i in res.items]


async def test_a_model_that_does_not_load_leaves_the_old_one_answering(client: LanguageClient):
    open_doc(client, "file:///s/keep.py", "# expect: 42\nx = \n")
    await until(client, lambda st: st["state"] == "ready")
    assert (await inline(client, "file:///s/keep.py", 1, 4))[0] == "42"
    since = len(client.messages)
    configure(client, modelPath="missing-model")
    msg = await shown(client, since, "missing-model", "keeping")  # at once, unasked
    assert "config.json" in msg
    st = await until(client, lambda st: st["loading"] is None)
    assert (st["state"], st["model"], st["modelPath"]) == ("ready", "fake", None)
    assert "missing-model/config.json" in st["loadError"] and st["error"] is None
    assert (await inline(client, "file:///s/keep.py", 1, 4))[0] == "42"  # still answering
    assert not any("unavailable" in m.message for m in client.messages[since:])
    configure(client, modelPath=None)  # back: the shipped one (here the fake) loads again
    st = await until(client, lambda st: st["loading"] is None and st["loadError"] is None)
    assert (st["state"], st["model"]) == ("ready", "fake")


async def test_a_new_model_loads_aside(client: LanguageClient):
    """While a new model loads, the old one answers; the switch comes once it has loaded."""
    open_doc(client, "file:///s/aside.py", "# expect: 7\ny = \n")
    await until(client, lambda st: st["state"] == "ready" and st["loading"] is None)
    configure(client, modelPath="loadslow:2")
    st = await until(client, lambda st: st["loading"] == "loadslow:2")
    assert (st["state"], st["modelPath"]) == ("ready", None)
    t0 = time.perf_counter()
    assert (await inline(client, "file:///s/aside.py", 1, 4))[0] == "7"
    assert time.perf_counter() - t0 < 1.5  # the old model answered: no wait for the load
    st = await until(client, lambda st: st["modelPath"] == "loadslow:2")
    assert (st["state"], st["loading"], st["loadError"]) == ("ready", None, None)
    configure(client, modelPath=None)
    await until(client, lambda st: st["modelPath"] is None and st["loading"] is None)


async def test_budgets_the_model_cannot_hold_are_refused(client: LanguageClient):
    before = (await status(client))["settings"]
    for bad, limit in (({"blockBudget": 400}, "256"), ({"contextTokens": 10000}, "8192")):
        since = len(client.messages)
        configure(client, lineBudget=8, **bad)  # nothing of a refused change is applied
        msg = await shown(client, since, next(iter(bad)), limit)
        assert "keeping the previous ones" in msg
        assert (await status(client))["settings"] == before
    configure(client, blockBudget=256, contextTokens=512)  # the limits themselves are fine
    st = await until(client, lambda st: st["settings"]["blockBudget"] == 256)
    assert st["settings"]["contextTokens"] == 512
    configure(client, blockBudget=before["blockBudget"], contextTokens=before["contextTokens"])
    await until(client, lambda st: st["settings"] == before)


async def test_a_log_file_that_cannot_be_written_is_refused(client: LanguageClient, tmp_path):
    before = (await status(client))["settings"]
    for bad in (str(tmp_path), str(tmp_path / "no-such-folder" / "parafill.log")):
        since = len(client.messages)
        configure(client, logFile=bad, lineBudget=9)
        msg = await shown(client, since, "logFile", "cannot be written")
        assert bad in msg
        assert (await status(client))["settings"] == before  # lineBudget not applied either
    good = tmp_path / "parafill.log"
    configure(client, logFile=str(good), lineBudget=9)
    await until(client, lambda st: st["settings"]["logFile"] == str(good))
    open_doc(client, "file:///s/log.py", "# expect: 1\nz = \n")
    assert await inline(client, "file:///s/log.py", 1, 4)
    assert "completion" in good.read_text()
    configure(client, logFile=None, lineBudget=before["lineBudget"])
    await until(client, lambda st: st["settings"] == before)


async def test_explicit_requests_have_a_deadline(client: LanguageClient):
    """Past explicitDeadlineMs an explicit request's block fill ends at a finished line: the
    answer is the lines finished so far, and the server counts the cut; 0: no deadline."""
    configure(client, modelPath="slow:0.1", explicitDeadlineMs=200)  # a fill takes 0.8 s
    await until(client, lambda st: st["modelPath"] == "slow:0.1" and st["loading"] is None)
    text, line, col = cursor_of("# expect: y = x\\n    return y\ndef f(x):\n    |\n")
    open_doc(client, "file:///s/deadline.py", text)
    texts = {}
    for ms in (200, 0):
        configure(client, explicitDeadlineMs=ms)
        await until(client, lambda st, ms=ms: st["settings"]["explicitDeadlineMs"] == ms)
        before = await status(client)
        texts[ms] = (await inline(client, "file:///s/deadline.py", line, col, invoked=True))[0]
        after = await status(client)
        assert after["deadlineCuts"] == before["deadlineCuts"] + (ms > 0)
    assert (texts[200], texts[0]) == ("y = x", "y = x\n    return y")
    configure(client, modelPath=None, explicitDeadlineMs=3000)
    await until(client, lambda st: st["modelPath"] is None and st["loading"] is None)


async def test_a_first_load_that_fails_is_reported_at_once(missing_client: LanguageClient):
    """Nothing to keep: the failure is shown as soon as it is known (no completion asked), and a
    good model path then loads."""
    await shown(missing_client, 0, "model unavailable", "missing-first/config.json")
    st = await status(missing_client)
    assert st["state"] == "error" and "missing-first" in st["loadError"]
    configure(missing_client, modelPath=None)
    st = await until(missing_client, lambda st: st["state"] == "ready")
    assert st["loadError"] is None and st["model"] == "fake"
    open_doc(missing_client, "file:///s/first.py", "# expect: 3\nw = \n")
    assert (await inline(missing_client, "file:///s/first.py", 1, 4))[0] == "3"


async def test_the_shipped_model_survives_bad_model_settings(real_client: LanguageClient, tmp_path):
    """A truncated shard, a text file as the model path, and CUDA where there is none: each is
    reported at once and the shipped model goes on answering."""
    text, line, col = cursor_of("def add(a, b):\n    return |\n")
    open_doc(real_client, "file:///s/real.py", text)
    st = await until(real_client, lambda st: st["state"] == "ready")
    model, device = st["model"], st["device"]
    assert await inline(real_client, "file:///s/real.py", line, col)
    truncated = tmp_path / "truncated"
    shutil.copytree(WEIGHTS, truncated)
    shard = next(iter(sorted(truncated.glob("model-*.safetensors"))))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a checkpoint\n")
    bad = [{"modelPath": str(truncated)}, {"modelPath": str(text_file)}]
    import torch

    if not torch.cuda.is_available():
        bad.append({"device": "cuda"})
    for setting in bad:
        since = len(real_client.messages)
        configure(real_client, **setting)
        msg = await shown(real_client, since, "could not load model", "keeping")
        st = await until(real_client, lambda st: st["loading"] is None)
        assert st["loadError"] and (st["state"], st["model"], st["device"]) == (
            "ready",
            model,
            device,
        ), msg
        assert await inline(real_client, "file:///s/real.py", line, col), setting
        configure(real_client, modelPath=None, device="auto")  # back to the working settings
        await until(real_client, lambda st: st["loading"] is None and st["loadError"] is None)


async def test_a_threads_change_keeps_the_loaded_model(real_client: LanguageClient):
    """`threads` applies to the model already loaded: nothing is loaded again."""
    st = await until(real_client, lambda st: st["state"] == "ready" and st["loading"] is None)
    loaded = st["loadSeconds"]
    configure(real_client, threads=1)
    st = await until(real_client, lambda st: st["settings"]["threads"] == 1)
    assert (st["threads"], st["adaptiveThreads"]) == (1, False)
    assert (st["loading"], st["loadSeconds"]) == (None, loaded)  # no load
    configure(real_client, threads=0)
    st = await until(real_client, lambda st: st["adaptiveThreads"] is True)
    assert st["loadSeconds"] == loaded
