"""A published checkpoint's tokenizer, from its own files, with transformers' standard classes.

Owns: loading `tokenizer.json` (PreTrainedTokenizerFast) or `vocab.json` + `merges.txt` (Qwen2's
byte-level BPE, `Qwen2Tokenizer`) with the special tokens that `tokenizer_config.json` adds;
never the checkpoint's own tokenizer code (`auto_map`). Special tokens are found by name (a
family lists the names it may use), never by a hard-coded id; `line_break_ids` lists the tokens
that are nothing but whitespace with a line break (what a single-line fill may not commit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from model.interface import CheckpointError


@dataclass(frozen=True)
class Specials:
    """The ids a family's decoding uses (None where the checkpoint has no such token)."""

    mask: int
    end: int
    begin: int | None = None
    expand: int | None = None


class FamilyTokenizer:
    """Text <-> ids for a published checkpoint (no special-token handling of its own: the
    layout adds begin and end tokens itself)."""

    def __init__(self, path: Path):
        self.path = path
        self.hf = load_hf_tokenizer(path)
        self.vocab_size = len(self.hf)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False)) if text else []

    def encode_pieces(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def declared(self, role: str) -> str | None:
        """The token the checkpoint's own tokenizer files name for `role` ("mask_token", ...:
        special_tokens_map.json, then tokenizer_config.json), else None."""
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            f = self.path / name
            try:
                data = json.loads(f.read_text()) if f.is_file() else {}
            except (OSError, ValueError):
                continue
            value = data.get(role) if isinstance(data, dict) else None
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value:
                return value
        return None

    def id_of(self, names: tuple[str, ...]) -> int | None:
        """The id of the first of `names` this vocabulary has, else None."""
        vocab = self.hf.get_vocab()
        for n in names:
            if n in vocab:
                return int(vocab[n])
        return None

    def special_ids(self) -> set[int]:
        return {int(i) for i in self.hf.all_special_ids} | set(self.added_ids())

    def added_ids(self) -> list[int]:
        return [int(i) for i in self.hf.added_tokens_decoder]

    def line_break_ids(self) -> list[int]:
        """Tokens made only of spaces, tabs and line breaks, with at least one line break."""
        out = []
        special = self.special_ids()
        for tok, i in self.hf.get_vocab().items():
            if i in special:
                continue
            text = self.hf.convert_tokens_to_string([tok])
            if "\n" in text and not text.strip(" \t\r\n"):
                out.append(int(i))
        return sorted(out)


def load_hf_tokenizer(path: Path):
    """transformers' standard tokenizer for the files in `path` (CheckpointError naming what is
    missing or corrupt)."""
    from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

    tok_json, vocab, merges = path / "tokenizer.json", path / "vocab.json", path / "merges.txt"
    config = _tokenizer_config(path)
    added = _added_tokens(config)
    try:
        if tok_json.is_file():
            hf = PreTrainedTokenizerFast(tokenizer_file=str(tok_json))
        elif vocab.is_file() and merges.is_file():
            hf = Qwen2Tokenizer(vocab=str(vocab), merges=str(merges))
        else:
            raise CheckpointError(
                f"{path}: no tokenizer files (tokenizer.json, or vocab.json and merges.txt)"
            )
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - the tokenizers library's parse errors
        raise CheckpointError(
            f"{path}: tokenizer files are corrupt ({type(e).__name__}: {e})"
        ) from None
    from tokenizers import AddedToken

    missing = [t for t in added if t["content"] not in hf.get_vocab()]
    if missing:
        # ids must come out as the checkpoint numbers them: add in id order, check each lands
        for t in sorted(missing, key=lambda t: t["id"]):
            hf.add_tokens(
                [AddedToken(t["content"], special=t["special"], normalized=False)],
                special_tokens=t["special"],
            )
            got = hf.convert_tokens_to_ids(t["content"])
            if got != t["id"]:
                raise CheckpointError(
                    f"{path / 'tokenizer_config.json'}: added token {t['content']!r} is id "
                    f"{t['id']} there but {got} after the vocabulary"
                )
    return hf


def _tokenizer_config(path: Path) -> dict:
    f = path / "tokenizer_config.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"tokenizer file is corrupt: {f} ({e})") from None
    return data if isinstance(data, dict) else {}


def _added_tokens(config: dict) -> list[dict]:
    out = []
    for k, v in (config.get("added_tokens_decoder") or {}).items():
        if isinstance(v, dict) and "content" in v:
            out.append({"id": int(k), "content": v["content"], "special": bool(v.get("special"))})
    return out


def find_specials(
    tok: FamilyTokenizer,
    mask: tuple[str, ...],
    end: tuple[str, ...],
    begin: tuple[str, ...] = (),
    expand: tuple[str, ...] = (),
) -> Specials:
    """The family's special tokens by name (the first name the vocabulary has; for the mask, the
    one the tokenizer files declare comes first); a checkpoint without a mask or an end token is
    a CheckpointError."""
    declared = tok.declared("mask_token")
    m = tok.id_of(((declared,) if declared else ()) + mask)
    e = tok.id_of(end)
    if m is None:
        raise CheckpointError(f"{tok.path}: the tokenizer has no mask token ({' / '.join(mask)})")
    if e is None:
        raise CheckpointError(f"{tok.path}: the tokenizer has no end token ({' / '.join(end)})")
    return Specials(
        m, e, tok.id_of(begin) if begin else None, tok.id_of(expand) if expand else None
    )
