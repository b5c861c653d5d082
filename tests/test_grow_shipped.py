"""A checkpoint of the shipped network's format trained with expand and delete
(training/train.py --expand-delete) decodes its holes growing and shrinking, through the same
loop as DreamOn's (model/growing.py via model/decoding.py): a tiny one trained here for a few
seconds, its expand or end logit made dominant to see each happen. Trained by steps, not by time, so
that the checkpoint is the same however busy the machine."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch

from model.infill import BuiltinInfiller
from model.interface import Hole, InfillRequest, StopRules
from training import data, train

TINY = ["--d", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--batch", "4"]


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grow")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / "textwrap.py").read_text(), (stdlib / "shlex.py").read_text()]
    data.build_shards(
        texts, str(data.DEFAULT_TOKENIZER), out / "shards", workers=1, infill_per_kb=1.0
    )
    train.main(["--data", str(out / "shards"), "--out", str(out / "plain"), "--minutes", "5", "--steps", "8",
                "--save-optimizer", *TINY])  # fmt: skip
    train.main(["--data", str(out / "shards"), "--out", str(out / "grown"), "--resume",
                str(out / "plain"), "--minutes", "5", "--steps", "8", "--expand-delete", *TINY])  # fmt: skip
    return out / "grown"


def _favour(m: BuiltinInfiller, token: int, by: float = 40.0) -> None:
    """Make `token` the network's most likely output everywhere (its tied LM head row)."""
    with torch.no_grad():
        m.net.lm_head.weight[token] = m.net.lm_head.weight[token] * 0 + by * m.net.norm.weight


REQ = InfillRequest(["def f(x):\n    return ", Hole(12), "\n\nprint(f(1))\n"], want_trajectory=True)


def test_a_fill_grows_by_the_expand_token_up_to_its_budget(grown):
    m = BuiltinInfiller(grown, "cpu", "fp32")
    assert m.expand_id is not None
    _favour(m, m.expand_id)
    (r,) = m.infill(REQ)
    widths = [s[0].count("\u2591") for s in r.trajectory]
    # four masks, each sure to expand, became eight; then the 12-slot budget blocks the expand
    assert widths[0] == 8 and max(widths) == 12, widths
    assert r.ended_by == ["budget"] and r.steps_used > 2


def test_a_fill_shrinks_by_the_end_token(grown):
    m = BuiltinInfiller(grown, "cpu", "fp32")
    _favour(m, m.tok.pad_id)
    (r,) = m.infill(REQ)
    assert r.fills == [""] and r.ended_by == ["pad"] and r.steps_used == 1


def test_stop_rules_batches_and_the_plain_checkpoint(grown):
    m = BuiltinInfiller(grown, "cpu", "fp32")
    line = InfillRequest(["x = ", Hole(8, stop=StopRules(single_line=True)), "\ny = 1\n"])
    two = InfillRequest(["a = ", Hole(6), "\nb = ", Hole(6), "\n"])
    alone = [m.infill(line), m.infill(two)]
    together = m.infill_batch([line, two])
    assert [[x.fills for x in r] for r in together] == [[x.fills for x in r] for r in alone]
    plain = BuiltinInfiller(grown.parent / "plain", "cpu", "fp32")
    assert plain.expand_id is None  # without the token: the fixed-slot loop as before
