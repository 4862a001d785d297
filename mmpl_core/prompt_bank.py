"""Prompt embeddings supplied by a host instead of text: a content-addressed table that stands in for a text encoder.

Plans name each segment's prompt by a string. Standalone, that string is the prompt text and a text encoder turns it
into embeddings. A host with its own text encoder (ComfyUI's CONDITIONING) hands over embeddings instead: the bank
names each one by a short hash of its values, so a plan records *which* conditioning it was made with, and
populating a plan with other conditioning is detected rather than silently mixed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping, Protocol

import torch

LABEL_PREFIX = "embedding:"


class TextEncoder(Protocol):
    def encode(self, prompt: str) -> torch.Tensor: ...


def embedding_label(embedding: torch.Tensor) -> str:
    """A stable name for an embedding [1, L, D]: its shape and a hash of its float32 values."""
    values = embedding.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(str(tuple(values.shape)).encode() + values.numpy().tobytes()).hexdigest()
    return f"{LABEL_PREFIX}{digest[:16]}"


class PromptBank:
    """Immutable mapping label → embedding [1, L, D] (float32, CPU), usable wherever a text encoder is.

    `fallback` encodes prompts that are not labels (e.g. plain text prompts of a plan made by the CLI with the demo
    model's hashed encoder); without it an unknown prompt is an error that names it.
    """

    def __init__(self, embeddings: Mapping[str, torch.Tensor] | None = None, fallback: TextEncoder | None = None):
        self._embeddings = dict(embeddings or {})
        self.fallback = fallback

    def __len__(self) -> int:
        return len(self._embeddings)

    def __contains__(self, label: str) -> bool:
        return label in self._embeddings

    @property
    def labels(self) -> list[str]:
        return sorted(self._embeddings)

    def with_embedding(self, embedding: torch.Tensor) -> tuple["PromptBank", str]:
        """A bank that also holds `embedding` ([L, D] or [1, L, D]), and the label it is stored under."""
        if embedding.ndim == 2:
            embedding = embedding[None]
        if embedding.ndim != 3 or embedding.shape[0] != 1:
            raise ValueError(f"a prompt embedding must be [1, L, D], got {tuple(embedding.shape)}")
        embedding = embedding.detach().to("cpu", torch.float32)
        label = embedding_label(embedding)
        return PromptBank({**self._embeddings, label: embedding}, self.fallback), label

    def merged(self, other: "PromptBank") -> "PromptBank":
        return PromptBank({**self._embeddings, **other._embeddings}, self.fallback or other.fallback)

    def encode(self, prompt: str) -> torch.Tensor:
        if prompt in self._embeddings:
            return self._embeddings[prompt]
        if self.fallback is not None and not prompt.startswith(LABEL_PREFIX):
            return self.fallback.encode(prompt)
        raise ValueError(
            f"no embedding for prompt {prompt!r}: the plan was made with conditioning that was not supplied "
            f"(known: {', '.join(self.labels) or 'none'})"
        )

    # --- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        save_file({label: e.contiguous() for label, e in self._embeddings.items()}, str(path))
        return path

    @classmethod
    def load(cls, path: str | Path, fallback: TextEncoder | None = None) -> "PromptBank":
        """Read a bank written by `save`; every label is checked against its tensor's hash."""
        from safetensors.torch import load_file

        tensors = load_file(str(path), device="cpu")
        for label, tensor in tensors.items():
            if tensor.ndim != 3 or embedding_label(tensor) != label:
                raise ValueError(f"{path}: embedding {label!r} does not match its contents (file damaged?)")
        return cls(tensors, fallback)
