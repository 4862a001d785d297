"""Wan2.1's text encoder, umT5-XXL (encoder only), through transformers' `UMT5EncoderModel` and its tokenizer.

Wan encodes a prompt as: whitespace-cleaned text → tokens with the closing ``</s>``, padded/truncated to 512 → the
encoder with the padding masked out → the outputs past the true length set to zero (the DiT attends to all 512
positions, so the zeros matter). `UMT5TextEncoder.encode` does exactly that and returns [1, 512, 4096] float32 on
the CPU, encoding each distinct text once (the negative prompt included) for every segment and device.

Two weight sources are accepted: a transformers folder (``config.json`` + safetensors, the diffusers layout's
``text_encoder/``) or Wan's own ``models_t5_umt5-xxl-enc-bf16.pth``, whose parameter names (``blocks.N.attn.q`` …)
are renamed to transformers' (`WAN_T5_TO_HF`). transformers is imported only here, when a real encoder is loaded.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformers import UMT5EncoderModel

TEXT_LEN = 512

# Wan t5.py (T5Encoder, umT5: one relative position table per block) → transformers UMT5EncoderModel. In Wan's
# feed-forward, fc1(x) * gelu(gate(x)): gate ↔ wi_0 (the activated half), fc1 ↔ wi_1, fc2 ↔ wo.
_L = r"blocks\.(\d+)\."
_E = r"encoder.block.\1.layer."
WAN_T5_TO_HF: list[tuple[str, str]] = [
    (r"token_embedding\.weight$", "shared.weight"),
    (_L + r"norm1\.weight$", _E + "0.layer_norm.weight"),
    (_L + r"attn\.([qkvo])\.weight$", _E + r"0.SelfAttention.\2.weight"),
    (_L + r"pos_embedding\.embedding\.weight$", _E + "0.SelfAttention.relative_attention_bias.weight"),
    (_L + r"norm2\.weight$", _E + "1.layer_norm.weight"),
    (_L + r"ffn\.gate\.0\.weight$", _E + "1.DenseReluDense.wi_0.weight"),
    (_L + r"ffn\.fc1\.weight$", _E + "1.DenseReluDense.wi_1.weight"),
    (_L + r"ffn\.fc2\.weight$", _E + "1.DenseReluDense.wo.weight"),
    (r"norm\.weight$", "encoder.final_layer_norm.weight"),
]
_RULES = [(re.compile(p), r) for p, r in WAN_T5_TO_HF]


class TextEncoderError(ValueError):
    """A text encoder file or folder that cannot be used; the message names it and says what was expected."""


def clean_prompt(text: str) -> str:
    """Wan's ``clean='whitespace'``: HTML entities unescaped (twice), runs of whitespace collapsed, ends stripped
    (``ftfy.fix_text`` first when ftfy is installed, as Wan does)."""
    try:
        import ftfy  # type: ignore[import-not-found]

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def wan_t5_to_hf(state_dict: dict[str, torch.Tensor], source: str = "umT5 state dict") -> dict[str, torch.Tensor]:
    """Rename Wan's umT5 encoder keys to transformers' (tensors are not copied); ``encoder.embed_tokens`` is tied
    to ``shared``. Unknown keys raise a `TextEncoderError` naming them."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        new = next((rx.sub(repl, key) for rx, repl in _RULES if rx.match(key)), None)
        (unknown.append(key) if new is None else out.__setitem__(new, value))
    if unknown:
        raise TextEncoderError(
            f"{source}: keys {sorted(unknown)[:8]} are not Wan umT5 encoder keys (expected token_embedding.weight, "
            "blocks.N.{norm1,attn.q/k/v/o,pos_embedding.embedding,norm2,ffn.gate.0,ffn.fc1,ffn.fc2}.weight, norm.weight)"
        )
    if "shared.weight" in out:
        out["encoder.embed_tokens.weight"] = out["shared.weight"]
    return out


def umt5_config_from_wan(state_dict: dict[str, torch.Tensor], source: str = "umT5 state dict"):
    """The `UMT5Config` of a Wan umT5 encoder state dict (Wan-named), read from its shapes."""
    from transformers import UMT5Config

    try:
        vocab, d_model = state_dict["token_embedding.weight"].shape
        d_ff = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
        buckets, heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
        inner = state_dict["blocks.0.attn.q.weight"].shape[0]
    except KeyError as err:
        raise TextEncoderError(f"{source} is not a Wan umT5 encoder: key {err.args[0]!r} missing") from None
    layers = len({m.group(1) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))})
    return UMT5Config(
        vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff, num_layers=layers, num_heads=heads,
        relative_attention_num_buckets=buckets, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6, dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
    )


def _load_wan_pth(path: Path, dtype: torch.dtype) -> "UMT5EncoderModel":
    """Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` → UMT5EncoderModel built on the meta device, each tensor cast to
    `dtype` as it is assigned (the file is memory-mapped: no second copy of the 11 GB of weights)."""
    from transformers import UMT5EncoderModel

    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zip" not in str(err):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # refused pickles, broken files
        raise TextEncoderError(f"cannot read {path} with torch.load(weights_only=True): {err}") from err
    if not isinstance(sd, dict):
        raise TextEncoderError(f"{path} holds a {type(sd).__name__}, not a state dict")
    config = umt5_config_from_wan(sd, str(path))
    hf = wan_t5_to_hf(sd, str(path))
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    expected = model.state_dict()
    missing, extra = expected.keys() - hf.keys(), hf.keys() - expected.keys()
    wrong = [k for k in expected.keys() & hf.keys() if tuple(expected[k].shape) != tuple(hf[k].shape)]
    if missing or extra or wrong:
        raise TextEncoderError(f"{path}: does not match a umT5 encoder (missing {sorted(missing)[:5]}, "
                               f"unexpected {sorted(extra)[:5]}, wrong shapes {sorted(wrong)[:5]})")
    cast: dict[int, torch.Tensor] = {}  # tied tensors stay tied
    hf = {k: cast.setdefault(id(v), v.to(dtype) if v.is_floating_point() else v) for k, v in hf.items()}
    model.load_state_dict(hf, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_umt5_model(path: str | Path, dtype: torch.dtype = torch.float32) -> "UMT5EncoderModel":
    """A umT5 encoder from a transformers folder (config.json + weights) or Wan's ``.pth`` file, on the CPU."""
    from transformers import UMT5EncoderModel

    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextEncoderError(f"text encoder folder {path} has no config.json (expected a transformers "
                                   "UMT5EncoderModel folder: config.json + model*.safetensors)")
        try:
            model = UMT5EncoderModel.from_pretrained(str(path), dtype=dtype, local_files_only=True)
        except Exception as err:  # noqa: BLE001 — re-raised with the folder named
            raise TextEncoderError(f"cannot load a UMT5EncoderModel from {path}: {type(err).__name__}: {err}") from err
        return model.eval().requires_grad_(False)
    if path.suffix.lower() in (".pth", ".pt", ".bin"):
        return _load_wan_pth(path, dtype)
    raise TextEncoderError(f"text encoder {path}: expected a transformers folder or Wan's "
                           "models_t5_umt5-xxl-enc-bf16.pth")


def load_tokenizer(path: str | Path):
    """The umT5 tokenizer of a folder (tokenizer.json / spiece.model + tokenizer_config.json)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001
        raise TextEncoderError(f"cannot load the umT5 tokenizer from {path} (expected tokenizer.json or "
                               f"spiece.model with tokenizer_config.json): {type(err).__name__}: {err}") from err


class UMT5TextEncoder:
    """Prompt → [1, text_len, d_model] float32 (CPU) umT5 embeddings with the padding zeroed, as Wan2.1 encodes.

    device: where the encoder runs. offload: keep the weights in CPU memory and move them to `device` only while
    encoding (they are needed once per distinct prompt, before the DiT's KV caches exist). Each text is encoded
    once; later calls return the stored embedding.
    """

    def __init__(self, model, tokenizer, *, device: torch.device | str = "cpu", offload: bool = False,
                 text_len: int = TEXT_LEN):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.offload = offload and self.device.type != "cpu"
        self.text_len = text_len
        self.dim = model.config.d_model
        self._cache: dict[str, torch.Tensor] = {}
        self.model.to("cpu" if self.offload else self.device)

    def tokenize(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask), each [1, text_len]: the cleaned prompt, ``</s>`` appended, padded and truncated."""
        out = self.tokenizer([clean_prompt(prompt)], padding="max_length", truncation=True, max_length=self.text_len,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return out["input_ids"], out["attention_mask"]

    @torch.no_grad()
    def encode(self, prompt: str) -> torch.Tensor:
        """[1, text_len, d_model] float32 on the CPU; positions past the prompt's tokens are exactly zero."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if prompt not in self._cache:
            ids, mask = self.tokenize(prompt)
            if self.offload:
                self.model.to(self.device)
            try:
                hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            finally:
                if self.offload:
                    self.model.to("cpu")
            hidden = hidden.float().cpu() * mask[..., None].to(torch.float32)  # zero the padding, as Wan does
            self._cache[prompt] = hidden
        return self._cache[prompt]

    def encode_batch(self, prompts: list[str]) -> torch.Tensor:
        return torch.cat([self.encode(p) for p in prompts])


def load_umt5_encoder(weights: str | Path, tokenizer: str | Path, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu", offload: bool = False) -> UMT5TextEncoder:
    return UMT5TextEncoder(load_umt5_model(weights, dtype), load_tokenizer(tokenizer), device=device, offload=offload)


__all__ = ["TEXT_LEN", "TextEncoderError", "UMT5TextEncoder", "WAN_T5_TO_HF", "clean_prompt", "load_tokenizer",
           "load_umt5_encoder", "load_umt5_model", "umt5_config_from_wan", "wan_t5_to_hf"]
