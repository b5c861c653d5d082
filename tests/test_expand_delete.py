"""DreamOn's expand and delete objective (training/expand.py, train.py --expand-delete): the
samples it builds, the tokenizer and network grown by the expand token (the shipped ones
unchanged), and a tiny training run on the CPU whose loss goes down."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_model

from model.infill import WEIGHTS_DIR
from model.network import ParafillNet
from model.tokenizer import CodeTokenizer
from training import data, expand, train
from training.data import FILLER_GROUP

MASK, PAD, EXP = 1, 0, 99  # ids of the hand-built examples below


def example(holes: list[tuple[list[int], int]], copies: int = 2, length: int = 64):
    """One infill example in training/data.py's layout: context pieces 10.., each hole (its fill,
    its budget) between two context tokens, `copies` noisy copies, filler to `length`."""
    tokens, pos, slots, p, c = [], [], [], 0, 10
    for fill, budget in holes:
        tokens.append(c)
        pos.append(p)
        slots.append((p + 1, fill, budget))
        p, c = p + 1 + budget, c + 1
    tokens.append(c)
    pos.append(p)
    group = [0] * len(tokens)
    for g in range(1, copies + 1):
        for a, fill, budget in slots:
            tokens += fill + [PAD] * (budget - len(fill))
            pos += range(a, a + budget)
            group += [g] * budget
    n = length - len(tokens)
    return (
        torch.tensor([tokens + [PAD] * n]),
        torch.tensor([pos + [0] * n]),
        torch.tensor([group + [FILLER_GROUP] * n]),
    )


def build(tok, pos, grp, t: float, p: float, seed: int = 0):
    n = tok.shape[0]
    g = torch.Generator().manual_seed(seed)
    return expand.expand_delete(
        tok,
        pos,
        grp,
        torch.full((n,), t),
        torch.full((n,), p),
        g,
        mask_id=MASK,
        pad_id=PAD,
        expand_id=EXP,
    )


def test_all_masked_and_merged_a_fill_is_one_expand_slot_then_its_ends():
    """Fill [20, 21, 22] in a budget of 5, t = 1, p = 1: the three tokens merge into one slot
    (target expand), the two PAD slots stay masked ends, the suffix moves back by two."""
    tok, pos, grp = example([([20, 21, 22], 5)])
    inp, tgt, npos, ngrp, w, elig = build(tok, pos, grp, t=1.0, p=1.0)
    # context: prefix 10 at 0, suffix 11 right after the hole's three remaining slots
    assert npos[0, :2].tolist() == [0, 4]
    first = slice(2, 7)
    assert ngrp[0, first].tolist() == [1, FILLER_GROUP, FILLER_GROUP, 1, 1]
    assert tgt[0, first].tolist() == [EXP, PAD, PAD, PAD, PAD]
    assert inp[0, first].tolist() == [MASK, PAD, PAD, MASK, MASK]
    assert npos[0, first].tolist() == [1, 0, 0, 2, 3]
    assert w[0, first].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert elig[0, first].tolist() == [True, False, False, True, True]
    # the second copy is filler: no loss, attends to nothing of the first copy
    assert (ngrp[0, 7:12] == FILLER_GROUP).all() and w[0, 7:].sum() == 0


def test_no_merge_keeps_the_layout_and_unmasked_tokens_stay_themselves():
    tok, pos, grp = example([([20, 21, 22], 5)])
    inp, tgt, npos, _, w, _ = build(tok, pos, grp, t=1.0, p=0.0)
    assert tgt[0, 2:7].tolist() == [20, 21, 22, PAD, PAD]
    assert inp[0, 2:7].tolist() == [MASK] * 5
    assert torch.equal(npos[0, :7], pos[0, :7])
    assert w[0, 2:7].tolist() == [1.0] * 5  # 1/t with t = 1; ends 1
    # t near 0: no fill token masked, so none merges; the ends are masked all the same
    inp, tgt, npos, _, w, _ = build(tok, pos, grp, t=1e-9, p=1.0)
    assert inp[0, 2:7].tolist() == [20, 21, 22, MASK, MASK]
    assert tgt[0, 2:7].tolist() == [20, 21, 22, PAD, PAD]
    assert w[0, 2:7].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("seed", range(20))
def test_samples_spell_the_fill_back_and_lay_out_without_gaps(seed):
    """Random holes, t and p: every hole's visible slots, each expand read as the slots it took
    in, spell the fill and then its PAD ends; positions of context and visible slots are
    0..N-1 once each, in their old order; merges stay inside one hole."""
    rng = torch.Generator().manual_seed(seed)
    holes = []
    for _ in range(int(torch.randint(1, 4, (1,), generator=rng))):
        n = int(torch.randint(0, 7, (1,), generator=rng))
        fill = (torch.randint(20, 90, (n,), generator=rng)).tolist()
        holes.append((fill, n + int(torch.randint(0, 4, (1,), generator=rng))))
    if all(b == 0 for _, b in holes):
        holes[0] = ([20], 1)
    tok, pos, grp = example(holes, copies=3, length=96)
    t, p = float(torch.rand(1, generator=rng)) * 0.98 + 0.02, float(torch.rand(1, generator=rng))
    inp, tgt, npos, ngrp, w, elig = build(tok, pos, grp, t, p, seed)
    first = (grp[0] == 1).nonzero().flatten().tolist()
    k = 0
    for fill, budget in holes:
        idx = first[k : k + budget]
        k += budget
        spelled, ends, i = [], 0, 0
        while i < len(idx):
            j = idx[i]
            assert ngrp[0, j] == 1, "a hole starts with a kept slot"
            took = 1
            while i + took < len(idx) and ngrp[0, idx[i + took]] == FILLER_GROUP:
                took += 1
            if tgt[0, j] == EXP:
                assert took >= 2 and inp[0, j] == MASK
            else:
                assert took == 1
            if tgt[0, j] == PAD:
                ends += 1
                assert inp[0, j] == MASK and w[0, j] == 1.0
            else:
                spelled += tok[0, idx[i : i + took]].tolist()
                assert inp[0, j] in (MASK, tgt[0, j])
                assert (w[0, j] > 0) == (inp[0, j] == MASK)
            i += took
        assert spelled == fill and ends == budget - len(fill)
    kept = ((grp[0] == 0) | ((grp[0] == 1) & (ngrp[0] == 1))).nonzero().flatten()
    old, new = pos[0, kept], npos[0, kept]
    assert sorted(new.tolist()) == list(range(len(kept)))
    assert torch.equal(torch.argsort(old), torch.argsort(new))
    assert elig[0].sum() == (ngrp[0] == 1).sum()


def test_shipped_tokenizer_has_no_expand_token_and_the_grown_one_adds_it_last():
    shipped = CodeTokenizer.from_file(WEIGHTS_DIR / "tokenizer.json")
    assert shipped.expand_id is None and shipped.special_ids == {0, 1, 2}
    grown = expand.add_expand_token(shipped)
    assert grown.expand_id == shipped.vocab_size and grown.vocab_size == shipped.vocab_size + 1
    text = "def f(x):\n    return x  # <|expand|> typed is text\n"
    assert grown.encode(text) == shipped.encode(text)
    assert grown.decode([*grown.encode("a = 1"), grown.expand_id]) == "a = 1"
    assert expand.add_expand_token(grown) is grown


def test_growing_the_network_keeps_its_logits_over_the_old_ids():
    net = tiny_model()
    ids = torch.randint(3, 64, (2, 12))
    with torch.no_grad():
        before = net(ids)
    expand.grow_vocab(net, 65)
    with torch.no_grad():
        after = net(ids)
    assert after.shape[-1] == 65 and net.config.vocab_size == 65
    assert torch.equal(after[..., :64], before)
    assert net.lm_head.weight is net.embed.weight  # still tied


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Training shards of a few standard-library files, made with the shipped tokenizer."""
    out = tmp_path_factory.mktemp("shards")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [f.read_text() for f in sorted((stdlib / "json").glob("*.py"))]
    texts += [(stdlib / "textwrap.py").read_text(), (stdlib / "shlex.py").read_text()]
    data.build_shards(texts, str(data.DEFAULT_TOKENIZER), out, workers=1, infill_per_kb=1.0)
    return out


def test_tiny_training_with_expand_and_delete_lowers_its_loss(shards):
    """A tiny network (width 32, one layer) trained on expand and delete samples only: the
    loss of its last steps is well below that of its first."""
    tok = expand.add_expand_token(CodeTokenizer.from_file(data.DEFAULT_TOKENIZER))
    batches = train.Batches(
        shards / "train", data.SEQ_LEN, torch.device("cpu"), tok.mask_id, tok.pad_id, tok.expand_id
    )
    torch.manual_seed(0)
    cfg = train.ParafillConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=tok.pad_id,
        mask_token_id=tok.mask_id,
        sep_token_id=tok.sep_id,
        train_seq_len=data.SEQ_LEN,
    )
    net = train.ParafillForMaskedDiffusion(cfg).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses, expands = [], 0
    for _ in range(40):
        batch = batches.draw(0, 8, g)
        expands += int(((batch[1] == tok.expand_id) & (batch[4] > 0)).sum())
        loss, _ = train.diffusion_loss(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    print(f"expand/delete smoke: loss {first:.3f} (first 8 steps) -> {last:.3f} (last 8)")
    assert expands > 0
    assert last < 0.7 * first


def test_the_recipe_flag_grows_a_checkpoint_and_resumes_it(shards, tmp_path):
    """train.main --expand-delete continuing from a checkpoint without the expand token (as from
    model/weights): the saved one has it in its tokenizer and its config, one more embedding row,
    its optimizer state resumed, and loads in the server's network."""
    tiny = ["--d", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--batch", "4"]
    plain = tmp_path / "plain"
    train.main(["--data", str(shards), "--out", str(plain), "--minutes", "0.02", "--save-optimizer",
                *tiny])  # fmt: skip
    grown = tmp_path / "grown"
    train.main(["--data", str(shards), "--out", str(grown), "--resume", str(plain),
                "--minutes", "0.02", "--expand-delete", *tiny])  # fmt: skip
    cfg = json.loads((grown / "config.json").read_text())
    tok = CodeTokenizer.from_file(grown / "tokenizer.json")
    assert tok.expand_id == cfg["expand_token_id"] == 10240 and cfg["vocab_size"] == 10241
    net = ParafillNet.load_checkpoint(grown)
    assert net.embed.weight.shape[0] == 10241
    state = json.loads((grown / "train_state.json").read_text())
    assert state["runs"][-1]["expand_delete"] and state["steps"] > 0
    # resuming the grown checkpoint keeps its tokenizer (no second expand token)
    again = tmp_path / "again"
    shutil.copytree(grown, again)
    train.main(["--data", str(shards), "--out", str(again / "r"), "--resume", str(again),
                "--minutes", "0.01", "--expand-delete", *tiny])  # fmt: skip
    assert CodeTokenizer.from_file(again / "r" / "tokenizer.json").vocab_size == 10241
    # what the recipe does not bring back is written again, the same bytes
    (grown / "tokenizer.json").rename(tmp_path / "saved.json")
    expand.main(["tokenizer", str(grown)])
    assert (grown / "tokenizer.json").read_bytes() == (tmp_path / "saved.json").read_bytes()
