"""Load Wan2.1 text-to-video DiT weights into the original Wan2.1 parameter names (those of `WanDiT`).

Accepted sources, all returned as ``{wan_key: tensor}``:

* safetensors in the original Wan2.1 or ComfyUI names (``model.diffusion_model.`` / ``diffusion_model.`` prefixes are
  stripped), as one file, a list of shards, a directory of shards or a ``*.index.json`` shard index;
* the same in diffusers ``WanTransformer3DModel`` names, renamed through `DIFFUSERS_TO_WAN`;
* the official MMPL ``.pt`` (``{'generator': {'model.' + wan_key: tensor}, 'generator_ema': {...}}``) or a plain
  ``.pt``/``.pth``/``.bin`` state dict, always read with ``torch.load(weights_only=True)`` (no arbitrary pickles).

Every problem surfaces as a `CheckpointError` naming the file and the offending keys.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from functools import partial
from typing import Callable, Iterable, Mapping, Sequence, Union

import torch
from torch import nn

from .model.config import WanConfig
from .model.modules import WanDiT

Tensor = torch.Tensor
StateDict = dict[str, Tensor]
PathLike = Union[str, os.PathLike]
Checkpoint = Union[PathLike, Sequence[PathLike], Mapping[str, Tensor]]

SAFETENSORS_EXTS = (".safetensors", ".sft")
TORCH_EXTS = (".pt", ".pth", ".bin")
ACCEPTED_FORMATS = (
    "a .safetensors file (Wan2.1, ComfyUI or diffusers names), a list or directory of .safetensors shards, "
    "a *.safetensors.index.json shard index, the official MMPL .pt ({'generator', 'generator_ema'}), "
    "or a plain .pt/.pth/.bin state dict"
)
COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.")  # stripped only when every key carries them
I2V_MARKERS = ("img_emb.", ".k_img.", ".v_img.", ".norm_k_img.", "image_embedder.", ".add_k_proj.", ".add_v_proj.")

# diffusers WanTransformer3DModel -> Wan2.1 names: (regex matched at the start of the key, replacement). The first
# matching rule renames the key prefix; the key's remaining suffix (".weight", ".bias") is kept. Note the norm swap:
# diffusers' affine cross-attention norm is ``norm2``, Wan's is ``norm3`` (Wan's ``norm2`` has no parameters).
_B = r"blocks\.(\d+)\."
DIFFUSERS_TO_WAN: list[tuple[str, str]] = [
    (r"condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"condition_embedder\.time_proj\.", "time_projection.1."),
    (_B + r"attn1\.to_q\.", r"blocks.\1.self_attn.q."),
    (_B + r"attn1\.to_k\.", r"blocks.\1.self_attn.k."),
    (_B + r"attn1\.to_v\.", r"blocks.\1.self_attn.v."),
    (_B + r"attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (_B + r"attn1\.norm_q\.", r"blocks.\1.self_attn.norm_q."),
    (_B + r"attn1\.norm_k\.", r"blocks.\1.self_attn.norm_k."),
    (_B + r"attn2\.to_q\.", r"blocks.\1.cross_attn.q."),
    (_B + r"attn2\.to_k\.", r"blocks.\1.cross_attn.k."),
    (_B + r"attn2\.to_v\.", r"blocks.\1.cross_attn.v."),
    (_B + r"attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (_B + r"attn2\.norm_q\.", r"blocks.\1.cross_attn.norm_q."),
    (_B + r"attn2\.norm_k\.", r"blocks.\1.cross_attn.norm_k."),
    (_B + r"norm2\.", r"blocks.\1.norm3."),
    (_B + r"ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (_B + r"ffn\.net\.2\.", r"blocks.\1.ffn.2."),
    (_B + r"scale_shift_table$", r"blocks.\1.modulation"),
    (r"scale_shift_table$", "head.modulation"),
    (r"proj_out\.", "head.head."),
    (r"patch_embedding\.", "patch_embedding."),
]
_DIFFUSERS_RULES = [(re.compile(pattern), repl) for pattern, repl in DIFFUSERS_TO_WAN]
_DIFFUSERS_MARKERS = ("condition_embedder.", "scale_shift_table", "proj_out.", ".attn1.", ".attn2.", ".ffn.net.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys/shapes do not match a Wan2.1 T2V DiT."""


def _natural(key: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _fmt_keys(keys: Iterable[str], limit: int = 10) -> str:
    keys = sorted(keys, key=_natural)
    text = ", ".join(keys[:limit])
    return text + (f", ... ({len(keys) - limit} more, {len(keys)} in all)" if len(keys) > limit else "")


def detect_format(keys: Iterable[str]) -> str:
    """``"diffusers"`` when the keys use ``WanTransformer3DModel`` names, else ``"wan"`` (original/ComfyUI)."""
    return "diffusers" if any(m in k for k in keys for m in _DIFFUSERS_MARKERS) else "wan"


def _reject_i2v(keys: Iterable[str], source: str) -> None:
    found = [k for k in keys if any(m in k for m in I2V_MARKERS)]
    if found:
        raise CheckpointError(
            f"{source} is a Wan2.1 image-to-video (CLIP-conditioned) checkpoint (keys {_fmt_keys(found, 3)}); "
            "MMPL needs a Wan2.1 text-to-video (T2V) architecture"
        )


def to_wan_state_dict(state_dict: Mapping[str, Tensor], source: str = "state dict") -> StateDict:
    """Rename a state dict to the original Wan2.1 names (tensors are not copied).

    Strips ComfyUI prefixes (when present, only the keys under the prefix are kept: a bundled checkpoint's VAE or
    text encoder are dropped), wrapper prefixes shared by every key (``model.``, ``module.``, ``_orig_mod.``),
    and renames diffusers keys with `DIFFUSERS_TO_WAN`. Keys no rule knows are kept, so that validation reports them.
    """
    sd = dict(state_dict)
    for prefix in COMFY_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    for prefix in WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    _reject_i2v(sd, source)
    if detect_format(sd) == "diffusers":
        renamed: StateDict = {}
        for key, value in sd.items():
            new = next((rx.sub(repl, key, count=1) for rx, repl in _DIFFUSERS_RULES if rx.match(key)), key)
            if new in renamed:
                raise CheckpointError(f"{source}: two keys map to the Wan2.1 key {new!r}")
            renamed[new] = value
        sd = renamed
    return sd


def _shard_files(directory: Path) -> list[Path]:
    """Shards of a directory: those named by its ``*.index.json`` (diffusers' preferred), else every safetensors."""
    preferred = "diffusion_pytorch_model.safetensors.index.json"
    indexes = sorted(directory.glob("*.index.json"), key=lambda p: (p.name != preferred, p.name))
    if indexes:
        return _index_files(indexes[0])
    shards = sorted(p for ext in SAFETENSORS_EXTS for p in directory.glob("*" + ext))
    if not shards:
        raise CheckpointError(f"{directory} holds no safetensors shards; expected {ACCEPTED_FORMATS}")
    return shards


def _index_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"cannot read the shard index {index}: {err}") from err
    return [index.parent / name for name in sorted(set(weight_map.values()))]


class LazyTensor:
    """A checkpoint tensor not read yet: its shape, and how to read it (one tensor at a time, on the CPU).

    Lets a loader check keys and shapes and infer the config before reading any weights, then stream each tensor to
    its device and dtype, so a 14B model never sits in RAM as a whole (let alone as a float32 copy)."""

    __slots__ = ("shape", "_read")

    def __init__(self, shape: Sequence[int], read: Callable[[], Tensor]):
        self.shape = torch.Size(shape)
        self._read = read

    def load(self) -> Tensor:
        return self._read()


def _read_safetensors(files: Sequence[Path], source: str) -> dict[str, LazyTensor]:
    """{key: LazyTensor} over safetensors shards opened with ``safe_open`` (headers only; no tensor is read yet)."""
    from safetensors import SafetensorError, safe_open

    sd: dict[str, LazyTensor] = {}
    for file in files:
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            shard = {key: LazyTensor(handle.get_slice(key).get_shape(), partial(handle.get_tensor, key))
                     for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {file} as safetensors ({source}): {err}") from err
        twice = sd.keys() & shard.keys()
        if twice:
            raise CheckpointError(f"{source}: keys {_fmt_keys(twice)} appear in more than one shard")
        sd.update(shard)
    return sd


def _materialize(value) -> Tensor:
    return value.load() if isinstance(value, LazyTensor) else value


def _read_torch(path: Path) -> Mapping:
    """A torch file read with ``weights_only=True``, memory-mapped when it is a zip-format file (then each tensor is
    paged in only when it is used), else read whole."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zip" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) torch.save file
    except Exception as err:  # UnpicklingError for refused objects, RuntimeError/EOFError for broken files
        raise CheckpointError(
            f"cannot read {path} with torch.load(weights_only=True) (pickled Python objects other than tensors "
            f"are refused for safety): {err}"
        ) from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _select(obj: Mapping, ema: bool, source: str) -> StateDict:
    """The weights of a loaded mapping: the MMPL ``generator``/``generator_ema`` part, or the mapping itself."""
    if "generator" in obj or "generator_ema" in obj:  # the official MMPL training checkpoint
        part = "generator_ema" if ema else "generator"
        if not isinstance(obj.get(part), Mapping):
            raise CheckpointError(f"{source} has no {part!r} state dict (ema={ema}); its keys: {_fmt_keys(obj)}")
        return {(k[len("model."):] if k.startswith("model.") else k): v for k, v in obj[part].items()}
    if ema:
        raise CheckpointError(f"ema=True needs an MMPL checkpoint with 'generator_ema'; {source} has {_fmt_keys(obj)}")
    return dict(obj)


def _open(checkpoint: Checkpoint, ema: bool) -> tuple[dict, str]:
    """Open any accepted source without reading its tensors: (Wan-named {key: Tensor or LazyTensor}, a description
    of the source for messages). safetensors give `LazyTensor`s, torch files memory-mapped tensors."""
    if isinstance(checkpoint, Mapping):
        source, obj = "state dict", checkpoint
    elif isinstance(checkpoint, (str, os.PathLike)):
        path = Path(checkpoint)
        source, suffix = str(path), path.suffix.lower()
        if not path.exists():
            raise CheckpointError(f"checkpoint {path} does not exist; expected {ACCEPTED_FORMATS}")
        if path.is_dir():
            obj = _read_safetensors(_shard_files(path), source)
        elif path.name.endswith(".index.json"):
            obj = _read_safetensors(_index_files(path), source)
        elif suffix in SAFETENSORS_EXTS:
            obj = _read_safetensors([path], source)
        elif suffix in TORCH_EXTS:
            obj = _read_torch(path)
        else:
            raise CheckpointError(f"unknown checkpoint extension {suffix!r} for {path}; expected {ACCEPTED_FORMATS}")
    elif isinstance(checkpoint, Sequence) and checkpoint:
        files = [Path(p) for p in checkpoint]
        source = f"{len(files)} shards ({files[0]}, ...)"
        if any(p.suffix.lower() not in SAFETENSORS_EXTS for p in files):
            raise CheckpointError(f"a list of shards must be .safetensors files; got {[str(p) for p in files]}")
        obj = _read_safetensors(files, source)
    else:
        raise CheckpointError(f"cannot load a checkpoint from {checkpoint!r}; expected {ACCEPTED_FORMATS}")
    return to_wan_state_dict(_select(obj, ema, source), source), source


def _read(checkpoint: Checkpoint, ema: bool) -> tuple[StateDict, str]:
    """Read any accepted source into memory: (Wan-named state dict on the CPU in stored dtypes, source)."""
    sd, source = _open(checkpoint, ema)
    return {k: _materialize(v) for k, v in sd.items()}, source


def read_config(checkpoint: Checkpoint, *, ema: bool = False, num_heads: int | None = None) -> WanConfig:
    """The `WanConfig` of a checkpoint from its shapes alone (safetensors headers, memory-mapped torch files)."""
    sd, source = _open(checkpoint, ema)
    return infer_config(sd, num_heads, source=source)


def load_wan_state_dict(checkpoint: Checkpoint, *, ema: bool = False) -> StateDict:
    """Read a checkpoint (any accepted format) as ``{wan_key: tensor}`` on the CPU, in its stored dtypes."""
    return _read(checkpoint, ema)[0]


def infer_config(
    state_dict: Mapping[str, Tensor], num_heads: int | None = None, *, source: str = "state dict"
) -> WanConfig:
    """The `WanConfig` of a Wan2.1 T2V state dict, read from its shapes.

    ``patch_embedding.weight`` [dim, in_dim, *patch], ``blocks.0.ffn.0.weight`` [ffn_dim, dim], ``text_embedding.0
    .weight`` [dim, text_dim], ``time_embedding.0.weight`` [dim, freq_dim], ``head.head.weight`` [out_dim * prod(patch),
    dim]. Heads are not stored: ``num_heads = dim // 128`` (the Wan/ComfyUI rule) unless `num_heads` is given, which
    is required when dim is not a multiple of 128. ``text_len`` and ``eps`` keep their Wan2.1 defaults.
    """
    sd = to_wan_state_dict(state_dict, source)
    needed = ("patch_embedding.weight", "blocks.0.ffn.0.weight", "text_embedding.0.weight",
              "time_embedding.0.weight", "head.head.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise CheckpointError(
            f"cannot infer a Wan2.1 T2V config from {source}: missing keys {_fmt_keys(missing)}; "
            f"found {len(sd)} keys: {_fmt_keys(sd)}"
        )
    patch_weight = sd["patch_embedding.weight"]
    dim, in_dim, patch = patch_weight.shape[0], patch_weight.shape[1], tuple(int(s) for s in patch_weight.shape[2:])
    if num_heads is None:
        if dim % 128:
            raise CheckpointError(
                f"{source}: dim {dim} is not a multiple of 128, so the Wan head_dim-128 rule cannot give the number "
                "of heads; pass num_heads explicitly"
            )
        num_heads = dim // 128
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    try:
        return WanConfig(
            dim=dim, ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0], num_heads=int(num_heads), num_layers=len(layers),
            in_dim=in_dim, out_dim=sd["head.head.weight"].shape[0] // math.prod(patch), patch_size=patch,
            text_dim=sd["text_embedding.0.weight"].shape[1], freq_dim=sd["time_embedding.0.weight"].shape[1],
            qk_norm="blocks.0.self_attn.norm_q.weight" in sd, cross_attn_norm="blocks.0.norm3.weight" in sd,
        )
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err


def _check_keys(expected: Mapping[str, tuple], sd: Mapping[str, Tensor], source: str) -> None:
    """Raise a `CheckpointError` listing missing, unexpected and mis-shaped keys of `sd` against `expected` shapes."""
    missing = expected.keys() - sd.keys()
    unexpected = sd.keys() - expected.keys()
    wrong = [k for k in expected.keys() & sd.keys() if tuple(sd[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{source} does not match the Wan2.1 T2V DiT:"]
    lines += [f"  missing keys ({len(missing)}): {_fmt_keys(missing)}"] if missing else []
    lines += [f"  unexpected keys ({len(unexpected)}): {_fmt_keys(unexpected)}"] if unexpected else []
    for k in sorted(wrong, key=_natural)[:10]:
        lines.append(f"  shape mismatch {k}: expected {tuple(expected[k])}, found {tuple(sd[k].shape)}")
    if len(wrong) > 10:
        lines.append(f"  ... {len(wrong) - 10} more shape mismatches ({len(wrong)} in all)")
    raise CheckpointError("\n".join(lines))


def load_wan_model(
    checkpoint: Checkpoint,
    *,
    ema: bool = False,
    num_heads: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    config: WanConfig | None = None,
) -> WanDiT:
    """Build a `WanDiT` holding a checkpoint's weights (cast to `dtype` on `device`), in eval mode.

    The module is created on the meta device; keys and shapes are checked before any tensor is read; then the
    tensors are streamed one at a time (read on the CPU, cast to `dtype` there, moved to `device`) and assigned, so
    the weights are allocated once, in the target dtype. `config` defaults to `infer_config` (with `num_heads`).
    Tensors already in `dtype` on `device` are used as they are: a model loaded from an in-memory state dict shares
    storage with it.
    """
    sd, source = _open(checkpoint, ema)
    cfg = config if config is not None else infer_config(sd, num_heads, source=source)
    with torch.device("meta"):
        model = WanDiT(cfg)
    _check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, sd, source)
    device = torch.device(device)
    loaded: StateDict = {}
    for key in list(sd):
        tensor = _materialize(sd.pop(key))
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)  # on the CPU first: half the bytes to move when dtype is narrower
        loaded[key] = tensor.to(device)
    model.load_state_dict(loaded, strict=True, assign=True)
    return model.eval()


def load_into(model: nn.Module, checkpoint: Checkpoint, *, ema: bool = False) -> nn.Module:
    """Copy a checkpoint's weights into an existing Wan module tree (`WanDiT`, ComfyUI's ``WanModel``...) strictly.

    Every parameter keeps its dtype and device; keys and shapes are checked first (`CheckpointError` on mismatch).
    """
    sd, source = _read(checkpoint, ema)
    _check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, sd, source)
    model.load_state_dict(sd, strict=True)
    return model


def load_matching_state_dict(
    checkpoint: Checkpoint, shapes: Mapping[str, tuple], *, ema: bool = False,
    cast: Callable[[str, Tensor], Tensor] | None = None,
) -> StateDict:
    """A checkpoint's tensors, checked to fit a model whose parameters have `shapes` ({wan_key: shape}) exactly:
    the weights a host patches into its own module tree (ComfyUI's ModelPatcher) instead of loading a copy.

    Keys and shapes are checked before any tensor is read; `cast(key, tensor)` then converts each tensor as it is
    read (e.g. to the host model's fp8 storage), so a float32 file never sits in memory whole."""
    sd, source = _open(checkpoint, ema)
    _check_keys(shapes, sd, source)
    out: StateDict = {}
    for key in list(sd):
        tensor = _materialize(sd.pop(key))
        out[key] = cast(key, tensor) if cast is not None else tensor
    return out


def save_wan_safetensors(
    model_or_sd: nn.Module | Mapping[str, Tensor], path: PathLike, dtype: torch.dtype | None = None, prefix: str = ""
) -> Path:
    """Write Wan-named weights to one safetensors file (``prefix="model.diffusion_model."`` gives ComfyUI's layout).

    Floating tensors are cast to `dtype` when given. Returns the path written.
    """
    from safetensors.torch import save_file

    sd = model_or_sd.state_dict() if isinstance(model_or_sd, nn.Module) else model_or_sd
    out = {}
    for key, value in sd.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[prefix + key] = value.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"format": "pt"})
    return path


__all__ = [
    "ACCEPTED_FORMATS", "DIFFUSERS_TO_WAN", "CheckpointError", "LazyTensor", "detect_format", "infer_config", "load_into",
    "load_matching_state_dict", "load_wan_model", "read_config", "load_wan_state_dict", "save_wan_safetensors", "to_wan_state_dict",
]
