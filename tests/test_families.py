"""Published diffusion coders (model/families, model/growing.py) on tiny random checkpoints
built in each family's published layout (tests/family_checkpoints.py): detection, layout,
logits shift, attention both ways, the dual cache, expand/delete, DreamOn's reference sampler
token for token, several holes, deadline, cancellation, the CLI and bad checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from family_checkpoints import (
    build_dream,
    build_llada,
    build_open_dcoder,
    build_remote_code_only,
)

from model.decoding import stop_verdicts
from model.families.checkpoint import inspect, resolve
from model.families.infiller import FamilyInfiller
from model.growing import GrowConfig, GrowIds, GrowingDenoiser
from model.interface import (
    CheckpointError,
    Hole,
    InfillCancelled,
    InfillRequest,
    StopRules,
)
from model.sampler import denoise_run

FIXTURE = Path(__file__).parent / "fixtures" / "dreamon_reference.json"
PARAFILL = Path(sys.executable).parent / "parafill"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("families")
    return {
        "dreamon": build_dream(d / "dreamon", variant="dreamon"),
        "dream-coder": build_dream(d / "dream-coder", variant="dream-coder"),
        "diffucoder": build_dream(d / "diffucoder", variant="diffucoder"),
        "open-dcoder": build_open_dcoder(d / "open-dcoder"),
        "llada": build_llada(d / "llada"),
    }


@pytest.fixture(scope="module")
def dreamon(ckpts):
    return FamilyInfiller(ckpts["dreamon"], "cpu", "fp32")


@pytest.fixture(scope="module")
def coder(ckpts):
    return FamilyInfiller(ckpts["dream-coder"], "cpu", "fp32")


# ---------------------------------------------------------------- finding and checking


def test_family_read_from_config(ckpts):
    assert inspect(ckpts["dreamon"]).family == "dream"
    assert inspect(ckpts["diffucoder"]).family == "dream"
    assert inspect(ckpts["llada"]).family == "llada"
    with pytest.raises(CheckpointError, match="modelFamily"):
        inspect(ckpts["open-dcoder"])  # a plain qwen2 config cannot say it is diffusion
    assert inspect(ckpts["open-dcoder"], "open-dcoder").family == "open-dcoder"


def test_bad_checkpoints_are_clear_errors(tmp_path, ckpts):
    with pytest.raises(CheckpointError, match="not found"):
        resolve(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        inspect(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="remote code"):
        inspect(build_remote_code_only(tmp_path / "rc"))
    bad = tmp_path / "unknown"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="unknown model family"):
        inspect(bad)
    with pytest.raises(CheckpointError, match="unknown model family 'nope'"):
        inspect(ckpts["dreamon"], "nope")


def test_truncated_weights_and_missing_tokenizer(tmp_path):
    p = build_dream(tmp_path / "t", variant="dream-coder")
    w = p / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        FamilyInfiller(p, "cpu", "fp32")
    q = build_dream(tmp_path / "q", variant="dream-coder")
    (q / "merges.txt").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        FamilyInfiller(q, "cpu", "fp32")
    r = build_dream(tmp_path / "r", variant="dream-coder")
    (r / "model.safetensors").rename(r / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only"):
        FamilyInfiller(r, "cpu", "fp32")


def test_hub_id_only_from_the_local_cache(tmp_path, ckpts, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match="hf download Dream-org/DreamOn-v0-7B"):
        resolve("Dream-org/DreamOn-v0-7B")
    repo = tmp_path / "hub" / "models--Dream-org--DreamOn-v0-7B"
    snap = repo / "snapshots" / "abc123"
    snap.parent.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    os.symlink(ckpts["dreamon"], snap)
    assert resolve("Dream-org/DreamOn-v0-7B") == snap
    assert inspect("Dream-org/DreamOn-v0-7B").family == "dream"


def test_memory_check_refuses_before_loading(ckpts, monkeypatch):
    import model.families.checkpoint as ck

    monkeypatch.setattr(ck, "available_memory", lambda device: 1 << 20)
    with pytest.raises(CheckpointError, match="GiB is available"):
        FamilyInfiller(ckpts["dream-coder"], "cpu", "fp32")


def test_special_tokens_found_by_name(ckpts, dreamon):
    vocab = dreamon.tok.hf.get_vocab()
    assert dreamon.ids.mask == vocab["<|mask|>"]
    assert dreamon.ids.end == vocab["<|endoftext|>"]
    assert dreamon.ids.begin == vocab["<|beginoftext|>"]
    assert dreamon.ids.expand == vocab["<|expand|>"]
    assert dreamon.growing
    od = FamilyInfiller(ckpts["open-dcoder"], "cpu", "fp32", family="open-dcoder")
    assert od.ids.mask == od.tok.hf.get_vocab()["<M>"]  # the one its tokenizer declares
    assert not od.growing


# ---------------------------------------------------------------- layout and passes


def test_layout_as_the_authors_build_it(dreamon, ckpts):
    req = InfillRequest(["def f(x):\n    return ", Hole(5), "\n\nprint(f(1))\n"])
    lay = dreamon.layout(req)
    seq, slots = lay.sequence([[dreamon.ids.mask] * 4])
    pre = dreamon.tok.encode("def f(x):\n    return ")
    suf = dreamon.tok.encode("\n\nprint(f(1))\n")
    assert seq == [dreamon.ids.begin, *pre, *[dreamon.ids.mask] * 4, *suf, dreamon.ids.end]
    assert slots == list(range(1 + len(pre), 1 + len(pre) + 4))
    od = FamilyInfiller(ckpts["open-dcoder"], "cpu", "fp32", family="open-dcoder")
    seq, _ = od.layout(req).sequence([[od.ids.mask] * 2])
    assert seq == [*pre, od.ids.mask, od.ids.mask, *suf]  # prefix masks suffix, nothing added


def _raw_logits(inf: FamilyInfiller, ids: list[int]) -> torch.Tensor:
    """The network's own causal-LM head over every position (no shift applied)."""
    t = torch.tensor([ids])
    with torch.inference_mode():
        return inf.lm.net(input_ids=t, position_ids=torch.arange(len(ids))[None]).logits[0]


def test_logits_shift_by_family(coder, ckpts):
    ids = coder.tok.encode("def area(w, h):\n    return w * h\n")
    pos = torch.arange(len(ids))[None]
    at = torch.tensor([[3, 7]])
    raw = _raw_logits(coder, ids)
    got = coder.lm.logits_at(torch.tensor([ids]), pos, at)[0]
    assert torch.allclose(got[0], raw[2], atol=1e-5)  # Dream: slot 3 read at position 2
    assert torch.allclose(got[1], raw[6], atol=1e-5)
    ll = FamilyInfiller(ckpts["llada"], "cpu", "fp32")
    lids = ll.tok.encode("def area(w, h):\n    return w * h\n")
    raw = _raw_logits(ll, lids)
    got = ll.lm.logits_at(torch.tensor([lids]), torch.arange(len(lids))[None], at)[0]
    assert torch.allclose(got[0], raw[3], atol=1e-5)  # LLaDA: not shifted


@pytest.mark.parametrize("name", ["dream-coder", "llada"])
def test_attention_reads_both_ways(ckpts, name):
    inf = FamilyInfiller(ckpts[name], "cpu", "fp32")
    ids = inf.tok.encode("x = compute(alpha, beta)\ny = x + 1\n")
    later = list(ids)
    later[-2] = (later[-2] + 5) % 200
    a, b = _raw_logits(inf, ids), _raw_logits(inf, later)
    assert not torch.allclose(a[2], b[2])  # a token after position 2 changes its logits


def test_dual_cache_first_pass_is_exact(coder):
    req = InfillRequest(["def f(x):\n    y = ", Hole(6), "\n    return y\n"])
    lay = coder.layout(req)
    rows = [[[coder.ids.mask] * 6]]
    coder.cache = "exact"
    exact = coder.passes(lay)(rows)[0]
    coder.cache = "dual"
    try:
        passes = coder.passes(lay)
        first = passes(rows)[0]
        assert torch.allclose(first, exact, atol=1e-4)
        rows2 = [[[5, 6, coder.ids.mask, coder.ids.mask, coder.ids.mask, coder.ids.mask]]]
        cached = passes(rows2)[0]  # the context's K/V from the first pass, the span anew
        coder.cache = "exact"
        exact2 = coder.passes(lay)(rows2)[0]
        assert cached.shape == exact2.shape
        assert (cached - exact2).abs().max() < 1.0  # close to exact, not bit-equal
    finally:
        coder.cache = "exact"


# ---------------------------------------------------------------- expand and delete


def _forced(choices: list[dict[int, int]], vocab: int = 10):
    """A step function whose k-th pass puts all mass on token choices[k][slot] (per row)."""
    calls = iter(choices)

    def step(rows):
        want = next(calls)
        out = []
        for row in rows:
            n = sum(len(h) for h in row)
            lg = torch.full((n, vocab), -20.0)
            lg[:, 0] = 0.0  # a weak default everywhere
            for slot, tok in want.items():
                lg[slot, tok] = 20.0
            out.append(lg)
        return out

    return step


IDS = GrowIds(mask=9, end=8, expand=7)


def test_expand_grows_and_end_deletes():
    cfg = GrowConfig(start=3, max_expansions=5, steps=10, tokens_per_step=1)
    run = GrowingDenoiser([8], IDS, cfg)
    step = _forced([{1: 7}, {0: 3}, {1: 4}, {2: 8}])  # expand at 1; 3, 4; end at 2
    run.advance(step(run.x))
    assert run.x == [[[9, 9, 9, 9]]]  # one slot became two masks
    run.advance(step(run.x))
    run.advance(step(run.x))
    assert run.x == [[[3, 4, 9, 9]]]
    run.advance(step(run.x))
    out = run.output()
    assert out.rows == [[[3, 4]]]  # the end and every mask after it went
    assert out.ended_by[(0, 0)] == "pad"
    assert run.done


def test_expand_blocked_at_the_cap():
    cfg = GrowConfig(start=2, max_expansions=1, steps=10, tokens_per_step=1)
    run = GrowingDenoiser([3], IDS, cfg)
    run.advance(_forced([{0: 7}])(run.x))
    assert run.x == [[[9, 9, 9]]]
    assert not run.may_grow(0, 0)  # cap reached: the expand logit is blocked now
    lg = torch.full((3, 10), -20.0)
    lg[:, 7] = 20.0  # the model wants to expand everywhere
    lg[:, 1] = 19.0
    run.advance([lg])
    assert 7 not in run.x[0][0] and len(run.x[0][0]) == 3


def test_several_holes_grow_apart():
    cfg = GrowConfig(start=2, steps=20, tokens_per_step=None, threshold=0.5)
    run = GrowingDenoiser([6, 6], IDS, cfg)
    out = denoise_run(run, _forced([{0: 7, 2: 1, 3: 8}, {}, {}, {}, {}, {}]))
    # hole 0 grew by one then filled with the default token; hole 1 kept its first token
    assert out.rows[0][1] == [1]
    assert out.rows[0][0] == [0, 0, 0]
    assert out.ended_by[(0, 1)] == "pad"


# ---------------------------------------------------------------- DreamOn's reference sampler


def test_equals_the_reference_sampler_token_for_token(tmp_path):
    """The fixture holds what DreamOn's own `batch_generate_with_expand_as_token`
    (eval/generator.py of DreamLM/DreamOn) produced on this tiny checkpoint, one token per pass,
    greedy: our decoding must give the same middle, token for token, in the same passes."""
    ref = json.loads(FIXTURE.read_text())
    ck = ref["checkpoint"]
    path = build_dream(
        tmp_path / "ref", variant=ck["variant"], seed=ck["seed"], **ck.get("build", {})
    )
    from family_checkpoints import safetensors_sha256

    assert safetensors_sha256(path) == ck["safetensors_sha256"]
    inf = FamilyInfiller(path, "cpu", "fp32")
    grew = shrank = 0
    for case in ref["cases"]:
        req = InfillRequest(
            [case["prefix"], Hole(64), case["suffix"]], tokens_per_step=1, temperature=0.0
        )
        if case.get("top_p") is None:
            inf.defaults = GrowConfig(start=4, max_expansions=64, steps=128, top_p=None)
        else:
            inf.defaults = GrowConfig(start=4, max_expansions=64, steps=128, top_p=case["top_p"])
        lay = inf.layout(req)
        seq, _ = lay.sequence([[inf.ids.mask] * 4])
        assert seq == case["input_ids"]
        out = inf.grow(req, lay)
        got = out.rows[0][0]
        assert got == case["middle_ids"], case["prefix"]
        if "steps_used" in case:
            assert out.steps_used == case["steps_used"]
        grew += len(got) > 4
        shrank += len(got) < 4
    assert grew and shrank  # the fixture exercises both
    # the CLI as a user runs it (DreamOn's defaults: top-p 0.9), a case that grew and shrank
    case = next(c for c in ref["cases"] if c.get("top_p") == 0.9 and len(c["middle_ids"]) > 4)
    f = tmp_path / "case.py"
    f.write_text(case["prefix"] + "<|fill|>" + case["suffix"])
    args = ("--tokens-per-step", "1", "--raw")
    out = _cli("fill", str(f), "--model", str(path), "--precision", "fp32", *args)
    assert out.returncode == 0, out.stderr
    middle = inf.tok.hf.decode(case["middle_ids"], skip_special_tokens=True)
    assert out.stdout == case["prefix"] + middle + case["suffix"]


# ---------------------------------------------------------------- requests


def test_stop_rules_deadline_and_cancel(coder, dreamon):
    for inf in (coder, dreamon):
        req = InfillRequest(
            ["def f(x):\n    y = ", Hole(12, stop=StopRules(single_line=True)), "\n"],
            want_trajectory=True,
        )
        (r,) = inf.infill(req)
        assert r.trajectory and len(r.trajectory) == r.steps_used
        assert "\u2591" in r.trajectory[0][0] or r.steps_used == 1
        with pytest.raises(InfillCancelled):
            inf.infill(req, should_stop=lambda: True)
        two = InfillRequest(["a = ", Hole(4), "\nb = ", Hole(4), "\n"], candidates=2, seed=1)
        res = inf.infill(two)
        assert all(len(x.fills) == 2 for x in res)
        assert res == sorted(res, key=lambda x: -x.score)


def test_stop_rules_read_the_fill_so_far(dreamon):
    """The holes' stop rules (model/codetext.py end_reason) judge each hole's text up to its
    first masked slot; past the deadline a multi-line fill ends at a finished line."""
    tok, mask = dreamon.tok, dreamon.ids.mask
    line = InfillRequest(["x = ", Hole(12, stop=StopRules(single_line=True)), "\n"])
    rules = stop_verdicts(dreamon, line, lambda: False)
    ran_past = tok.encode("f(1)\ny = 2")
    assert rules([[[*ran_past, mask]]]) == [["scope"]]
    assert rules([[[*tok.encode("f(1"), mask]]]) == [[None]]
    assert rules([[[mask, *ran_past]]]) == [[None]]  # nothing before the first mask yet
    block = InfillRequest(["def f():\n", Hole(30, stop=StopRules(max_lines=5)), "\n"])
    body = tok.encode("    a = 1\n    b = 2\n")
    assert stop_verdicts(dreamon, block, lambda: False)([[[*body, mask]]]) == [[None]]
    assert stop_verdicts(dreamon, block, lambda: True)([[[*body, mask]]]) == [["deadline"]]
    assert stop_verdicts(dreamon, InfillRequest(["a", Hole(3), "b"]), lambda: True) is None


def test_bad_requests(coder):
    with pytest.raises(ValueError, match="at least one Hole"):
        coder.layout(InfillRequest(["no holes"]))
    with pytest.raises(ValueError, match="hole budgets"):
        coder.layout(InfillRequest(["x", Hole(coder.window), "y"]))


# ---------------------------------------------------------------- the CLI


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PARAFILL), *args], check=False, capture_output=True, text=True, timeout=300, **kw
    )


def test_cli_fill_raw_and_planned(tmp_path, ckpts, dreamon):
    f = tmp_path / "a.py"
    f.write_text("def add(a, b):\n    return <|fill|>\n\nprint(add(1, 2))\n")
    out = _cli(
        "fill",
        str(f),
        "--model",
        str(ckpts["dreamon"]),
        "--precision",
        "fp32",
        "--tokens-per-step",
        "1",
        "--raw",
    )
    assert out.returncode == 0, out.stderr
    req = InfillRequest(
        ["def add(a, b):\n    return ", Hole(64), "\n\nprint(add(1, 2))\n"], tokens_per_step=1
    )
    want = dreamon.infill(req)[0].fills[0]
    assert out.stdout == f"def add(a, b):\n    return {want}\n\nprint(add(1, 2))\n"
    planned = _cli("fill", str(f), "--model", str(ckpts["dream-coder"]), "--pass-cache", "dual")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("def add(a, b):\n    return ")
    assert "<|fill|>" not in planned.stdout
    od = _cli("fill", str(f), "--model", str(ckpts["open-dcoder"]), "--model-family", "open-dcoder")
    assert od.returncode == 0, od.stderr
    missing = _cli("fill", str(f), "--model", "Some-org/not-here")
    assert missing.returncode == 2 and "hf download Some-org/not-here" in missing.stderr


def test_failed_load_keeps_the_previous_model(tmp_path, ckpts):
    from lsp_server.engine import Engine

    engine = Engine()
    engine.load(str(ckpts["dream-coder"]), "cpu", "fp32")
    assert engine.wait_ready(120)
    first = engine.infiller
    bad = build_dream(tmp_path / "bad", variant="dream-coder")
    (bad / "model.safetensors").write_bytes(b"\x00" * 10)
    engine.load(str(bad), "cpu", "fp32")
    deadline = time.time() + 120
    while engine.loading is not None and time.time() < deadline:  # the load runs aside
        time.sleep(0.05)
    assert "corrupt" in (engine.load_error or "")
    assert engine.infiller is first
    req = InfillRequest(["x = ", Hole(3), "\n"])
    assert first.infill(req)[0].fills


@pytest.mark.parametrize("name", ["dreamon", "dream-coder"])
def test_a_batch_equals_its_requests_one_by_one(ckpts, name):
    """The model server's batches: windows of different lengths padded into one pass each
    step; every request's fills, passes and ends are what it gets alone."""
    inf = FamilyInfiller(ckpts[name], "cpu", "fp32")
    reqs = [
        InfillRequest(["def add(a, b):\n    return ", Hole(8), "\n"]),
        InfillRequest(["x = [1, 2, 3]\ny = ", Hole(6), "\nprint(y)\n# more text here\n"]),
        InfillRequest(["a = ", Hole(4), "\nb = ", Hole(4), "\n"], candidates=2, seed=5),
        InfillRequest(["no holes here"]),
    ]
    alone = []
    for r in reqs:
        try:
            alone.append(inf.infill(r))
        except ValueError as exc:
            alone.append(exc)
    left = []
    together = inf.infill_batch(reqs, on_done=lambda i, out: left.append(i))
    assert sorted(left) == [0, 1, 2, 3]
    assert isinstance(together[3], ValueError)
    for a, b in zip(alone[:3], together[:3]):
        assert [(x.fills, x.steps_used, x.ended_by) for x in a] == [
            (x.fills, x.steps_used, x.ended_by) for x in b
        ]
        assert [x.score for x in a] == pytest.approx([x.score for x in b], abs=1e-4)
    stopped = inf.infill_batch(reqs[:2], [lambda: False, lambda: True])
    assert isinstance(stopped[1], InfillCancelled) and stopped[0]
