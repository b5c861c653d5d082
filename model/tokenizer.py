"""Byte-level BPE tokenizer (HF `tokenizers`) with named special tokens.

Owns: the pre-tokenization rule, training the BPE on a corpus, exact round trip of any text,
and piecewise encoding. The pre-tokenizer isolates every newline and keeps a line's indentation
as its own piece, so line starts and ends are always token boundaries; prefix, fill and suffix
are still encoded as separate pieces (``encode_pieces``) so a cursor anywhere in a line falls on
a token boundary exactly as in training.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, MASK, SEP = "<|pad|>", "<|mask|>", "<|sep|>"
SPECIALS = [PAD, MASK, SEP]  # ids 0, 1, 2; PAD doubles as end-of-fill
# DreamOn's expand token: a mask committed as it becomes two masks. Only a checkpoint trained
# with expand and delete (training/train.py --expand-delete) has it, after the BPE's ids; the
# shipped tokenizer has none.
EXPAND = "<|expand|>"
# newline | indentation at a line start | identifier (optional leading space) | number | punctuation run | spaces
SPLIT = r"\r\n|\n|\r|^[ \t]+|[ ]?[\p{L}_][\p{L}\p{N}_]*|[ ]?\p{N}+|[ ]?[^\s\p{L}\p{N}_]+|[ \t]+|\s"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def train_tokenizer(files: list[str], vocab_size: int, out: str | Path) -> CodeTokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train(files, trainer)
    tok.save(str(out))
    return CodeTokenizer(tok)


class CodeTokenizer:
    """Thin wrapper: ids for specials, exact encode/decode, piecewise encoding."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        tok.encode_special_tokens = True  # "<|mask|>" typed in a file is text, not a control token
        self.pad_id = tok.token_to_id(PAD)
        self.mask_id = tok.token_to_id(MASK)
        self.sep_id = tok.token_to_id(SEP)
        if None in (self.pad_id, self.mask_id, self.sep_id):
            raise ValueError("tokenizer lacks the special tokens " + ", ".join(SPECIALS))
        self.expand_id = tok.token_to_id(EXPAND)  # None: no expand token (the shipped one)
        self.vocab_size = tok.get_vocab_size()
        self.special_ids = {self.pad_id, self.mask_id, self.sep_id}
        if self.expand_id is not None:
            self.special_ids.add(self.expand_id)
        self._newline_ids: list[int] | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> CodeTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_pieces(self, pieces: list[str]) -> list[list[int]]:
        """Encode each piece on its own (batch call); empty pieces give []."""
        enc = self.tok.encode_batch([p for p in pieces if p], add_special_tokens=False)
        it = iter(enc)
        return [next(it).ids if p else [] for p in pieces]

    def decode(self, ids: list[int]) -> str:
        ids = [i for i in ids if i not in self.special_ids]
        return self.tok.decode(ids, skip_special_tokens=False) if ids else ""

    def token_text(self, i: int) -> str:
        return self.decode([i])

    @property
    def newline_ids(self) -> list[int]:
        """Ids of the tokens that contain a line break."""
        if self._newline_ids is None:
            vocab = self.tok.get_vocab()
            self._newline_ids = sorted(
                i
                for i in vocab.values()
                if i not in self.special_ids and "\n" in self.token_text(i)
            )
        return self._newline_ids

    def __len__(self) -> int:
        return self.vocab_size


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="train the byte-level BPE")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--vocab", type=int, default=10240)
    ap.add_argument("--out", default=str(Path(__file__).parent / "weights/tokenizer.json"))
    a = ap.parse_args()
    t = train_tokenizer(a.files, a.vocab, a.out)
    print(f"vocab {t.vocab_size} -> {a.out}")


if __name__ == "__main__":
    main()
