"""A weight-free, deterministic text encoder: each word maps to a fixed pseudo-random embedding.

It lets tiny and demo models be conditioned on prompts without any hub model. Embeddings have Wan's shape
[1, text_len, text_dim] with zero padding after the last token, like umT5 outputs in Wan2.1.

Cross-attention has no positions on the text side, so a bag of word vectors cannot tell "a red circle and a yellow
square" from "a red square and a yellow circle", nor a navy-to-black gradient from a black-to-navy one. With
``context=1`` each token also carries the vector of the bigram it ends ("red circle", "to black"), a fixed stand-in
for the contextual embeddings umT5 gives Wan.
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Iterable

import torch

# Wan2.1's default negative prompt (the official MMPL settings use it unchanged).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class HashedTextEncoder:
    """Prompt → [1, text_len, dim]: token i is a unit-variance Gaussian vector seeded by the token's text
    (context 0), or the normalised sum of that and the vector of the bigram (token i−1, token i) (context 1).

    vocabulary: the words a model was trained on (empty: unknown); `unknown_words` lists a prompt's others."""

    CONTEXTS = (0, 1)

    def __init__(self, dim: int = 4096, text_len: int = 512, context: int = 0, vocabulary: Iterable[str] = ()):
        if context not in self.CONTEXTS:
            raise ValueError(f"context must be one of {self.CONTEXTS}, got {context!r}")
        self.dim = dim
        self.text_len = text_len
        self.context = context
        self.vocabulary = frozenset(vocabulary)
        self._vectors: dict[str, torch.Tensor] = {}

    def tokens(self, prompt: str) -> list[str]:
        return _TOKEN.findall(prompt.lower())[: self.text_len]

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` outside the vocabulary, then (when the vocabulary holds word pairs) pairs of known words
        it never saw together ("blue to"), in order of first use; none when no vocabulary is set."""
        if not self.vocabulary:
            return []
        tokens = self.tokens(prompt)
        unknown = [t for t in tokens if t not in self.vocabulary]
        if any(" " in entry for entry in self.vocabulary):
            unknown += [f"{a} {b}" for a, b in zip(tokens, tokens[1:])
                        if a in self.vocabulary and b in self.vocabulary and f"{a} {b}" not in self.vocabulary]
        return list(dict.fromkeys(unknown))

    def _token_vector(self, token: str) -> torch.Tensor:
        if token not in self._vectors:
            seed = int.from_bytes(hashlib.sha256(token.encode("utf-8")).digest()[:8], "little") >> 1
            self._vectors[token] = torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
        return self._vectors[token]

    def encode(self, prompt: str) -> torch.Tensor:
        """[1, text_len, dim]; the empty prompt encodes to zeros (the unconditional input of guidance)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        out = torch.zeros(1, self.text_len, self.dim)
        tokens = self.tokens(prompt)
        if tokens:
            vectors = torch.stack([self._token_vector(t) for t in tokens])
            if self.context:
                bigrams = torch.stack([self._token_vector(f"{a} {b}") for a, b in zip(["<s>"] + tokens, tokens)])
                vectors = (vectors + bigrams) / math.sqrt(2)
            out[0, : len(tokens)] = vectors
        return out

    def encode_batch(self, prompts: list[str]) -> torch.Tensor:
        return torch.cat([self.encode(p) for p in prompts])
