"""Instruction tokenizers as plain ``tokenizers.Tokenizer`` objects (one ``tokenizer.json`` in a checkpoint).

A random-init VLA has no tokenizer to borrow, so it builds a word-level one from the training
instructions (:func:`word_tokenizer`): lower-cased words split on whitespace and punctuation,
ranked by frequency, with fixed ids for ``[PAD]`` (0), ``[UNK]`` (1) and ``[BOS]`` (2). A pretrained
model brings its own fast tokenizer, whose ``tokenizer.json`` is kept as is. Both are saved into
the checkpoint folder, so a saved VLA tokenizes offline and identically.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

PAD, UNK, BOS = "[PAD]", "[UNK]", "[BOS]"
SPECIALS = (PAD, UNK, BOS)
TOKENIZER_FILE = "tokenizer.json"


def _word_pipeline():
    from tokenizers import normalizers, pre_tokenizers

    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]), pre_tokenizers.Whitespace()


def word_tokenizer(texts: Iterable[str] = (), max_words: int = 256):
    """A word-level ``tokenizers.Tokenizer`` over the ``max_words`` most frequent words of ``texts``
    (ties broken alphabetically, so the same texts always give the same ids)."""
    from tokenizers import Tokenizer, models

    norm, pre = _word_pipeline()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    words = sorted(counts, key=lambda w: (-counts[w], w))[:max_words]
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({w: len(SPECIALS) + i for i, w in enumerate(words)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    return tok


def is_unfitted_word_tokenizer(tok) -> bool:
    """True for a word tokenizer that knows only the special tokens (built before any instruction)."""
    return tok.get_vocab_size() == len(SPECIALS) and tok.token_to_id(PAD) == 0


def load_tokenizer(path: str | Path):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def pad_id_of(tok) -> int:
    """The padding id: ``[PAD]`` (word-level), else the tokenizer's pad/eos token, else 0."""
    for name in (PAD, "<pad>", "<|endoftext|>", "</s>", "<|end_of_text|>"):
        idx = tok.token_to_id(name)
        if idx is not None:
            return int(idx)
    return 0


def encode(tok, texts: Sequence[str], max_tokens: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids (B, L) and a validity mask (B, L) with L = the longest encoding, at most
    ``max_tokens`` (an empty instruction still gets one padding slot, masked)."""
    encoded = [e.ids[:max_tokens] for e in tok.encode_batch(list(texts), add_special_tokens=True)]
    length = max(1, max((len(e) for e in encoded), default=1))
    ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), length), dtype=torch.bool)
    for i, e in enumerate(encoded):
        if e:
            ids[i, length - len(e) :] = torch.tensor(e, dtype=torch.long)
            mask[i, length - len(e) :] = True
    return ids, mask
