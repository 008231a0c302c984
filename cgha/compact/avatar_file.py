"""The compressed avatar: everything reenactment needs in one pickle-free file (`cgha.compact.codec` format), for
any avatar model (cgha.avatar.model).

Contents: the model's positions (`compact.store.positions`: floats or a Morton-coded grid) and opacities (8-bit by
default), each quantised group's codebook and indices, the per-Gaussian attributes no group covers, the model's
`exact_buffers` at full precision, every other weight of the model (prefix = its `checkpoint_kind`, e.g.
`gaussianhead.`) at `compact.store.network` and of the post-render network (`supres.`) at
`compact.store.post_render`, and as metadata the model kind, both configs and the attribute widths. Every array is
entropy coded with `compact.store.entropy`. The Gaussians are stored sorted along the Morton curve of their
positions (every per-Gaussian array in the same order), which puts spatial neighbours next to each other for the
entropy coder; the order of Gaussians does not change a render. Files written before the model interface (no
`model` in the metadata) are GHA avatars and still load. `compact_report.json` compares its bytes on disk with the
raw fp32 checkpoints the run wrote.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from cgha.avatar.model import AvatarModel, model_class
from cgha.avatar.post_render import NoPostRender, post_render_kind
from cgha.compact.codec import encoded_sizes, read_compact, write_compact
from cgha.compact.channel_quant import is_channel_quantised
from cgha.compact.config import CompactStoreConfig
from cgha.compact.morton import morton_order
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
from cgha.errors import CheckpointError, ConfigError
from cgha.module.super_resolution import SupResModuleConfig, SuperResolutionModule
from cgha.utils.atomic import write_bytes_atomic

KIND = "compact-gaussian-head-avatar"
POST_RENDER_PREFIX = "supres"
OPACITY_EPS = 1e-4  # 8-bit opacity 0 or 1 would make the stored logit infinite
# Files written before the model interface record no widths; their only group of two attributes was GHA's scale_rot,
# [log-scale (3), rotation (4)].
LEGACY_WIDTHS = {"scales": 3, "rotation": 4}


def _encoding(precision: str) -> str:
    return {"uint8": "uint8_unit"}.get(precision, precision)


def _network_spec(value: np.ndarray, precision: str, coder: str) -> tuple:
    """How to store one network tensor at `precision` (fp32 | fp16 | intN): weights of >= 2 dims per output
    channel (axis 0: rows of a linear layer, filters of a convolution), the rest as floats."""
    if not np.issubdtype(value.dtype, np.floating):
        return value, "raw", {"entropy": coder}
    if precision.startswith("int"):
        if is_channel_quantised(value.shape):
            return value, "qint", {"bits": int(precision[3:]), "axis": 0, "entropy": coder}
        return value, "fp16", {"entropy": coder}
    return value, precision, {"entropy": coder}


def _store_spec(value: np.ndarray, precision: str, coder: str, **options) -> tuple:
    """(array, encoding, options) of a per-Gaussian array or codebook at a store precision."""
    if precision == "int8":  # codebooks: one scale per column, since columns mix log-scales and rotations
        return value, "qint", {"bits": 8, "axis": value.ndim - 1, "entropy": coder}
    return value, _encoding(precision), {"entropy": coder, **options}


def network_tensors(model: AvatarModel, post_render: nn.Module, store: CompactStoreConfig
                    ) -> List[Tuple[str, torch.Tensor, str]]:
    """(name in the file, tensor, precision) of every network tensor the compressed file stores: the model's
    state-dict entries other than its per-Gaussian attributes and exact buffers, at `store.network`, and the
    post-render step's, at `store.post_render` (default: as network). The tensors share storage with the modules'
    parameters and buffers, so quantisation-aware training (cgha.compact.network_qat) quantises what is written."""
    apart = set(model.canonical_attributes()) | set(model.exact_buffers)
    found = []
    post_render_precision = store.post_render or store.network
    for prefix, weights, precision in ((model.checkpoint_kind, model.state_dict(), store.network),
                                       (POST_RENDER_PREFIX, post_render.state_dict(), post_render_precision)):
        for key, value in weights.items():
            if prefix != model.checkpoint_kind or key not in apart:
                found.append((f"{prefix}.{key}", value, precision))
    return found


def save_compact_avatar(path: str | os.PathLike, model: AvatarModel, post_render: nn.Module,
                        quantizer: GroupedQuantizer, store: CompactStoreConfig,
                        subject: Optional[Dict[str, Any]] = None) -> Dict[str, int]:
    """Write the compressed avatar atomically; returns the payload bytes of every stored array. `subject`: the
    avatar's record of its training subject (cgha.avatar.subject), stored in the metadata."""
    coder = store.entropy
    attributes = {key: value.detach().cpu().numpy() for key, value in model.canonical_attributes().items()}
    position, opacity = model.position_attribute, model.opacity_attribute
    # Every per-Gaussian array below is indexed with `order`: one left out would pair Gaussians with another's
    # attributes (tests/test_compact_v2.py renders before and after to catch it).
    order = morton_order(attributes[position], store.position_bits)
    opacities = torch.sigmoid(torch.from_numpy(attributes[opacity][order, 0])).numpy()
    arrays: Dict[str, tuple] = {
        position: _store_spec(attributes[position][order], store.positions, coder, bits=store.position_bits),
        opacity: _store_spec(opacities, store.opacity, coder),
    }
    state = model.state_dict()
    for name in model.exact_buffers:
        arrays[name] = (state[name].cpu().numpy(), "fp32")
    covered = set(quantizer.covered_attributes)
    for name, value in attributes.items():
        if name not in covered and name not in (position, opacity):
            arrays[name] = _store_spec(value[order], store.attributes, coder)
    for group, vq in quantizer.quantizers.items():
        num_codes = int(vq.codebook.shape[0])
        arrays[f"codebook.{group}"] = _store_spec(vq.codebook.cpu().numpy(), store.codebooks, coder)
        index = vq.index.cpu().numpy()[order]
        # Byte-aligned indices suit an entropy coder; without one, bit-packing is the smaller form.
        arrays[f"index.{group}"] = ((index, "uint", {"num_codes": num_codes, "entropy": coder}) if coder != "none"
                                    else (index, "bitpacked", {"num_codes": num_codes}))
    for name, value, precision in network_tensors(model, post_render, store):
        arrays[name] = _network_spec(value.detach().cpu().numpy(), precision, coder)
    metadata = {
        "kind": KIND,
        "model": model.kind,
        "model_config": dataclasses.asdict(model.cfg),
        "post_render": post_render_kind(post_render),
        "num_gaussians": model.num_gaussians,
        "groups": list(quantizer.groups),
        "codebook_sizes": quantizer.codebook_sizes(),
        "attribute_widths": {name: int(value.shape[-1]) for name, value in attributes.items()},
        "gaussian_order": "morton",
        "store": dataclasses.asdict(store),
    }
    if isinstance(post_render, SuperResolutionModule):
        metadata["supresmodule"] = dataclasses.asdict(post_render.cfg)
    if subject is not None:
        metadata["subject"] = subject
    return write_compact(path, arrays, metadata)


def load_compact_avatar(path: str | os.PathLike, device: torch.device
                        ) -> Tuple[AvatarModel, nn.Module, Dict[str, Any]]:
    """(model with its attributes decoded from the codebooks, post-render module, metadata), on `device`."""
    from cgha.config import config_from_dict  # the config loader imports the compaction section: import it late

    arrays, metadata = read_compact(path)
    if metadata.get("kind") != KIND:
        raise CheckpointError(f"{path}: a compressed file, but not a compact Gaussian-head avatar "
                              f"(kind {metadata.get('kind')!r})")
    kind = metadata.get("model", "gha")
    try:
        cls = model_class(kind)
    except ConfigError:
        raise CheckpointError(f"{path}: an avatar of model kind {kind!r}, which this version does not know") from None
    try:
        model_cfg = config_from_dict(cls.Config, metadata.get("model_config", metadata.get("gaussianheadmodule")),
                                     f"{path} metadata")
        tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
        spec = GroupSpec.of(cls)
        widths = metadata.get("attribute_widths", LEGACY_WIDTHS)
        decoded = spec.split({group: tensors[f"codebook.{group}"].float()[tensors[f"index.{group}"]]
                              for group in metadata["groups"]}, widths)
        prefix = cls.checkpoint_kind + "."
        state = {key[len(prefix):]: value.float() for key, value in tensors.items() if key.startswith(prefix)}
        for name in cls.exact_buffers:
            state[name] = tensors[name].float()
        opacity = tensors[cls.opacity_attribute].float().clamp(OPACITY_EPS, 1 - OPACITY_EPS)
        state[cls.opacity_attribute] = torch.logit(opacity)[:, None]
        state[cls.position_attribute] = tensors[cls.position_attribute].float()
        for name, value in decoded.items():
            state[name] = value.float()
        for name, value in tensors.items():  # attributes no group covers are stored under their own names
            if "." not in name and name not in state:
                state[name] = value.float()
        model = cls.from_state_dict(model_cfg, state)
        model.load_state_dict(state)
        post_render = _post_render(metadata, model, tensors, path)
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError) as error:
        raise CheckpointError(f"{path}: inconsistent compact avatar ({type(error).__name__}: "
                              f"{str(error).splitlines()[0]})") from None
    return model.to(device), post_render.to(device), metadata


def _post_render(metadata: Dict[str, Any], model: AvatarModel, tensors: Dict[str, torch.Tensor], path) -> nn.Module:
    from cgha.config import config_from_dict

    if metadata.get("post_render", "super_resolution") == "none":
        return NoPostRender(model.color_dim)
    supres = SuperResolutionModule(config_from_dict(SupResModuleConfig, metadata["supresmodule"], f"{path} metadata"))
    prefix = POST_RENDER_PREFIX + "."
    supres.load_state_dict({key[len(prefix):]: value.float() for key, value in tensors.items()
                            if key.startswith(prefix)})
    return supres


def write_report(path: str | os.PathLike, compact_file: Path, raw_files: Dict[str, Path],
                 metadata: Dict[str, Any]) -> Dict[str, Any]:
    """compact_report.json: real bytes on disk of the compressed file vs the raw fp32 checkpoints, and per part."""
    parts: Dict[str, int] = {}
    for name, size in encoded_sizes(compact_file).items():
        part = name.split(".", 1)[0] if "." in name else name
        parts[part] = parts.get(part, 0) + size
    compact_bytes = os.path.getsize(compact_file)
    parts["header_and_checksum"] = compact_bytes - sum(parts.values())
    raw = {kind: os.path.getsize(file) for kind, file in raw_files.items() if Path(file).is_file()}
    report = {"file": compact_file.name, "compact_bytes": compact_bytes, "raw_bytes": sum(raw.values()),
              "raw_files": raw, "ratio": sum(raw.values()) / compact_bytes, "parts": parts, **metadata}
    write_bytes_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
    return report
