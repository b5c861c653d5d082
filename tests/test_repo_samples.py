"""Repository-level infill examples (training/repo_samples.py): the header is the server's packing
of the package's other files (path line first, the definition the hole's line uses), lines not
using imported names appear too, the eval-only packages are never read, and training reads the
shards built with them."""

from __future__ import annotations

import json
import os
import re
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from lsp_server.context.chunks import definitions
from model.tokenizer import CodeTokenizer
from training import data, repo_samples, train

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "workspace"
TINY = ["--d", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--batch", "4"]


@pytest.fixture(scope="module")
def tok() -> CodeTokenizer:
    return CodeTokenizer.from_file(data.DEFAULT_TOKENIZER)


def _context(tok, arrays) -> str:
    tokens, _, group = arrays
    return tok.decode([int(t) for t in tokens[group == data.CONTEXT_GROUP]])


def _fixture_examples(tok, n=16, seed=3):
    table = {f"pkg/{p.name}": p.read_text() for p in (FIXTURE / "pkg").glob("*.py")}

    def defs(rel):
        return definitions(rel, table[rel], "python")

    here = "pkg/main.py"
    return table[here], repo_samples.repo_examples(
        table[here], here, table.__contains__, defs, seed, n, tok
    )


# which definition a use of each imported name needs (tests/fixtures/workspace/pkg)
NEEDS = {"Order": "class Order", "compute_total": "def compute_total", "grouping": "def group_by"}


def test_header_is_the_packing_of_the_imported_files_and_holds_what_the_line_uses(tok):
    text, examples = _fixture_examples(tok)
    lines = text.split("\n")
    assert len(examples) == 16
    for e in examples:
        ctx = _context(tok, e.arrays)
        assert ctx.startswith(e.header) and re.match(r"# (core|grouping)\.py\n", e.header)
        assert e.header_tokens == len(tok.encode(e.header))
        used = set(re.findall(r"\w+", lines[e.line])) & set(NEEDS)
        assert e.uses == bool(used)
        for name in used:
            assert NEEDS[name] in e.header, (lines[e.line], e.header)
    assert {e.uses for e in examples} == {True, False}  # lines not using them appear too
    assert len({e.header_tokens for e in examples}) > 2  # headers of several sizes


def test_the_header_tokens_are_those_of_the_header_and_prefix_encoded_together(tok):
    _, examples = _fixture_examples(tok, n=4)
    for e in examples:
        ctx = _context(tok, e.arrays)
        (ids,) = tok.encode_pieces([ctx])
        tokens, _, group = e.arrays
        assert [int(t) for t in tokens[group == 0]] == ids  # as the server's one first piece


def test_packages_are_top_level_folders_and_loose_modules_stand_alone():
    r = os.sep + "r"
    assert repo_samples.package_of(f"{r}/email/mime/text.py", [r]) == (
        f"{r}/email",
        "email/mime/text.py",
    )
    assert repo_samples.package_of(f"{r}/os.py", [r]) == (f"{r}/os.py", "os.py")
    assert repo_samples.package_of(f"{r}/site-packages/httpx/_api.py", [r]) == (
        f"{r}/site-packages/httpx",
        "httpx/_api.py",
    )
    assert repo_samples.package_of("/elsewhere/x.py", [r]) is None


SHOP = {
    "shop/models.py": '''"""The shop's records."""

from dataclasses import dataclass, field


@dataclass
class Item:
    """A product line of a cart."""

    name: str
    price: float
    quantity: int = 1


@dataclass
class Cart:
    items: list = field(default_factory=list)

    def add(self, item: Item) -> None:
        self.items.append(item)
''',
    "shop/tax.py": '''"""Taxes by region."""

RATES = {"eu": 0.2, "us": 0.07, "uk": 0.175}


def apply_tax(amount: float, region: str = "eu") -> float:
    """The amount with the region's tax added."""
    return round(amount * (1 + RATES.get(region, 0.0)), 2)
''',
    "shop/pricing.py": '''"""Prices of carts."""

from shop.models import Cart, Item
from .tax import apply_tax


def subtotal(cart: Cart) -> float:
    return sum(i.price * i.quantity for i in cart.items)


def total(cart: Cart, region: str = "eu") -> float:
    """The cart's price with tax."""
    value = subtotal(cart)
    return apply_tax(value, region)


def single(name: str, price: float) -> Cart:
    cart = Cart()
    cart.add(Item(name, price))
    return cart
''',
    "shop/views.py": '''"""What the shop's pages show."""

from pygls.server import LanguageServer
from . import pricing
from .models import Cart


def receipt(cart: Cart, region: str) -> str:
    lines = [f"{i.name} x{i.quantity}: {i.price:.2f}" for i in cart.items]
    lines.append(f"total: {pricing.total(cart, region):.2f}")
    return "\\n".join(lines)


def server() -> LanguageServer:
    return LanguageServer("shop", "1.0")
''',
    "pygls/server.py": '''"""Never to be read: the held-out repository's name."""


class LanguageServer:
    def secret_pygls_marker(self, name, version):
        self.name, self.version = name, version
        return "held out: this text must never reach the corpus"
''',
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for rel, text in SHOP.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.symlink("/nonexistent/target.py", root / "pygls" / "broken.py")  # fails if ever read
    (root / "zz").mkdir()  # enough tokens for a training window in each split (the last: val)
    for name in ("shlex.py", "textwrap.py"):
        shutil.copy(Path(sysconfig.get_paths()["stdlib"]) / name, root / "zz" / name)
    out = root.parent / "shards"
    data.main(["--out", str(out), "--roots", str(root), "--workers", "1",
               "--infill-per-kb", "1", "--repo-per-kb", "6"])  # fmt: skip
    return out


def test_the_option_writes_repository_examples_into_the_infill_shard(shards, tok):
    stats = json.loads((shards / "stats.json").read_text())
    assert stats["kept"] == 6 and "unreadable" not in stats  # pygls/ never listed nor read
    repo, split = stats["repo"], stats["shards"]
    assert 0 < repo["examples"] == sum(s["repo_examples"] for s in split.values())
    texts = []
    for name in ("train", "val"):
        tokens = np.load(shards / name / data.INFILL_FILE)["tokens"]
        assert tokens.shape[0] == split[name]["infill_examples"]
        texts += [tok.decode([int(t) for t in row]) for row in tokens]
        texts.append(tok.decode(np.fromfile(shards / name / data.STREAM_FILE, np.uint16).tolist()))
    assert any(re.match(r"# (\.\./shop/)?(models|tax|pricing)\.py\n", t) for t in texts)
    assert not any("secret_pygls_marker" in t or "held out" in t for t in texts)


def test_a_few_training_steps_run_on_them(shards, tmp_path):
    train.main(["--data", str(shards), "--out", str(tmp_path / "run"), "--minutes", "5",
                "--steps", "3", *TINY])  # fmt: skip
    assert (tmp_path / "run" / "config.json").exists()
