"""DreamOn's expand and delete objective (training/train.py --expand-delete; issue 22, item 5).

A fill decoded with expand and delete tokens starts from a few masks and finds its own length: a
mask committed as <|expand|> becomes two masks, and one committed as the end (PAD) deletes itself
and every mask after it. DreamOn (Wu et al., 2025, github.com/DreamLM/DreamOn) teaches both by
training on the span as that decoding meets it part way; this module does the same over our own
infill examples (training/data.py's layout: context first, then noisy copies of the holes, each
hole its fill then PAD up to a random budget). For each example, with one t and one merge
probability p:

- end: the hole's PAD slots (its budget beyond the fill) are always masked, target PAD: the masks
  a fill does not need, which committing the end deletes;
- content: each fill token is masked with probability t, target the token, as in the plain
  objective;
- expand: two neighbouring masked fill tokens of one hole merge with probability p into one
  masked slot whose target is <|expand|>. Merges chain (a slot may stand for three tokens or more,
  its target still <|expand|>: it has to grow again). The slot merged away leaves the layout and
  every position after it moves back by one, so the suffix sits right after the hole's remaining
  slots, as in a decoding whose span has not grown yet.

Only the first copy of the holes is kept: the other copies become filler (training/data.py's
FILLER_GROUP), since the context's positions follow the first copy's shortened span. The full-
sequence windows of a batch are unchanged.

p: half the examples take MERGE_PROB, the others MERGE_PROB * (the share of the fill left
unmasked), so that nearly masked spans merge less (DreamOn mixes a static and such a dynamic
schedule). Weights: 1/t on masked content (as the plain objective), 1 on an end slot (masked
always: its expected weight in the plain objective).

Also here: growing a tokenizer and a network by the expand token (`add_expand_token`,
`grow_vocab`) when continuing from a checkpoint that has none, such as model/weights. The new
token's id comes after every existing one, so the network's logits over the old ids are
unchanged for any input without it. The grown tokenizer is the same whoever grows it, so the GPU
recipe does not bring it back (a device returns 8 files at most):

  python -m training.expand tokenizer DIR   # DIR/tokenizer.json: the shipped one with <|expand|>
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer
from torch import nn

from model.tokenizer import EXPAND, CodeTokenizer
from training.data import CONTEXT_GROUP, DEFAULT_TOKENIZER, FILLER_GROUP, MAX_COPIES

FIRST_COPY = CONTEXT_GROUP + 1  # the group of an example's first noisy copy of its holes
MERGE_PROB = 0.5


def add_expand_token(tok: CodeTokenizer) -> CodeTokenizer:
    """`tok` with <|expand|> added after its last id (itself when it has one)."""
    if tok.expand_id is not None:
        return tok
    grown = Tokenizer.from_str(tok.tok.to_str())
    grown.add_special_tokens([AddedToken(EXPAND, special=True, normalized=False)])
    return CodeTokenizer(grown)


@torch.no_grad()
def grow_vocab(model: nn.Module, vocab_size: int) -> None:
    """Give the network's embedding (and an untied LM head) rows up to `vocab_size`, each new one
    the mean of the old rows; the old rows are kept as they are. No-op when it has as many."""
    emb = model.embed
    old, d = emb.weight.shape
    if vocab_size <= old:
        return
    tied = bool(model.config.tie_word_embeddings)

    def grown(w: torch.Tensor) -> torch.Tensor:
        extra = w.mean(0, keepdim=True).expand(vocab_size - old, d)
        return torch.cat([w, extra])

    model.embed = nn.Embedding(vocab_size, d, device=emb.weight.device, dtype=emb.weight.dtype)
    model.embed.weight.copy_(grown(emb.weight))
    head = nn.Linear(d, vocab_size, bias=False, device=emb.weight.device, dtype=emb.weight.dtype)
    if tied:
        head.weight = model.embed.weight
    else:
        head.weight.copy_(grown(model.lm_head.weight))
    model.lm_head = head
    model.config.vocab_size = vocab_size


def merge_probs(n: int, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(n,) merge probability of each example: MERGE_PROB, or for half of them (at random)
    MERGE_PROB * (1 - t)."""
    dynamic = torch.rand(n, device=t.device, generator=g) < 0.5
    return torch.where(dynamic, MERGE_PROB * (1 - t), torch.full_like(t, MERGE_PROB))


def expand_delete(
    tok: torch.Tensor,
    pos: torch.Tensor,
    grp: torch.Tensor,
    t: torch.Tensor,
    merge_p: torch.Tensor,
    g: torch.Generator,
    *,
    mask_id: int,
    pad_id: int,
    expand_id: int,
):
    """Infill examples (tok, pos, grp: (n, L), training/data.py's layout) with a mask rate `t`
    and a merge probability `merge_p` each ((n,)) -> (input_ids, targets, positions, groups,
    loss weights, eligible) as train.Batches.draw returns them (module docstring)."""
    n, length = tok.shape
    dev = tok.device
    first = grp == FIRST_COPY
    other = (grp > FIRST_COPY) & (grp <= MAX_COPIES)
    end = first & (tok == pad_id)
    fill = first & ~end
    drawn = torch.rand(n, length, device=dev, generator=g) < t[:, None]
    masked = end | (fill & drawn)
    can = fill & masked  # masked fill tokens: the ones that merge

    def next_(x: torch.Tensor, edge) -> torch.Tensor:
        return torch.cat([x[:, 1:], torch.full_like(x[:, :1], edge)], 1)

    coin = torch.rand(n, length, device=dev, generator=g) < merge_p[:, None]
    # slot i takes in slot i+1: both masked fill tokens of one hole (a hole's slots sit side by
    # side at consecutive positions; the next hole starts after some context)
    merged = can & next_(can, False) & (next_(pos, -1) == pos + 1) & coin
    gone = torch.cat([torch.zeros_like(merged[:, :1]), merged[:, :-1]], 1)
    # every position after a slot that is gone moves back by one
    at = pos.clamp(max=length)
    count = torch.zeros(n, length + 1, dtype=torch.long, device=dev)
    count.scatter_add_(1, at, gone.long())
    before = count.cumsum(1) - count
    new_pos = pos - before.gather(1, at)

    out = gone | other
    targets = torch.where(merged, torch.full_like(tok, expand_id), tok)
    targets = torch.where(out, torch.full_like(tok, pad_id), targets)
    inp = torch.where(masked, torch.full_like(tok, mask_id), tok)
    inp = torch.where(out, torch.full_like(tok, pad_id), inp)
    new_pos = torch.where(out, torch.zeros_like(pos), new_pos)
    groups = torch.where(out, torch.full_like(grp, FILLER_GROUP), grp)
    keep = masked & ~gone
    w = torch.where(keep, torch.where(end, 1.0, 1.0 / t[:, None]), 0.0)
    return inp, targets, new_pos, groups, w, first & ~gone


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="write a tokenizer grown by <|expand|>")
    ap.add_argument("what", choices=["tokenizer"])
    ap.add_argument("dir", type=Path, help="the checkpoint folder to write tokenizer.json into")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="the one to grow")
    a = ap.parse_args(argv)
    tok = add_expand_token(CodeTokenizer.from_file(a.tokenizer))
    tok.tok.save(str(a.dir / "tokenizer.json"))
    print(f"{a.dir / 'tokenizer.json'}: {tok.vocab_size} ids, <|expand|> = {tok.expand_id}")


if __name__ == "__main__":
    main()
