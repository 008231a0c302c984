"""The compressed avatar: everything reenactment needs in one pickle-free file (`cgha.compact.codec` format).

Contents: Gaussian positions, opacity (8-bit by default), each quantised group's codebook and bit-packed indices,
the attributes no group covers, the neutral landmarks, every MLP and super-resolution weight, and the model config
as metadata. Precisions follow `compact.store`. `compact_report.json` compares its bytes on disk with the raw fp32
state dicts of the Gaussian head and super-resolution net (GHA's `gaussianhead_latest` + `supres_latest`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from cgha.compact.codec import encoded_sizes, read_compact, write_compact
from cgha.compact.quantizer import GroupedQuantizer, split_groups
from cgha.config import CompactSection, GaussianHeadModuleConfig, SupResModuleConfig, config_from_dict
from cgha.errors import CheckpointError
from cgha.module.gaussian_head import GaussianHeadModule
from cgha.module.super_resolution import SuperResolutionModule
from cgha.recorder.checkpoint import save_atomic
from cgha.utils.atomic import write_bytes_atomic

KIND = "compact-gaussian-head-avatar"
PER_GAUSSIAN = ("xyz", "feature", "scales", "rotation", "opacity", "landmarks_3d_neutral")
OPACITY_EPS = 1e-4  # 8-bit opacity 0 or 1 would make the stored logit infinite


def _encoding(precision: str) -> str:
    return {"uint8": "uint8_unit"}.get(precision, precision)


def save_compact_avatar(path: str | os.PathLike, module: GaussianHeadModule, supres: SuperResolutionModule,
                        quantizer: GroupedQuantizer, compact: CompactSection) -> Dict[str, int]:
    """Write the compressed avatar atomically; returns the payload bytes of every stored array."""
    store = compact.store
    attributes = {key: value.detach() for key, value in module.canonical_attributes().items()}
    arrays: Dict[str, tuple] = {
        "xyz": (attributes["xyz"].cpu().numpy(), _encoding(store.positions)),
        "opacity": (torch.sigmoid(attributes["opacity"][:, 0]).cpu().numpy(), _encoding(store.opacity)),
        "landmarks_3d_neutral": (module.landmarks_3d_neutral.cpu().numpy(), "fp32"),
    }
    covered = set(split_groups({group: torch.zeros(1, 1) for group in quantizer.groups}))
    for name in ("feature", "scales", "rotation"):
        if name not in covered:
            arrays[name] = (attributes[name].cpu().numpy(), _encoding(store.positions))
    for group, vq in quantizer.quantizers.items():
        arrays[f"codebook.{group}"] = (vq.codebook.cpu().numpy(), _encoding(store.codebooks))
        arrays[f"index.{group}"] = (vq.index.cpu().numpy(), "bitpacked", {"num_codes": int(vq.codebook.shape[0])})
    for prefix, state in (("gaussianhead", module.state_dict()), ("supres", supres.state_dict())):
        for key, value in state.items():
            if prefix == "gaussianhead" and key in PER_GAUSSIAN:
                continue
            arrays[f"{prefix}.{key}"] = (value.detach().cpu().numpy(), _encoding(store.network))
    metadata = {
        "kind": KIND,
        "num_gaussians": module.num_gaussians,
        "groups": list(quantizer.groups),
        "codebook_sizes": quantizer.codebook_sizes(),
        "gaussianheadmodule": dataclasses.asdict(module.cfg),
        "supresmodule": dataclasses.asdict(supres.cfg),
    }
    return write_compact(path, arrays, metadata)


def load_compact_avatar(path: str | os.PathLike, device: torch.device
                        ) -> Tuple[GaussianHeadModule, SuperResolutionModule, Dict[str, Any]]:
    """Rebuild the Gaussian head (attributes decoded from the codebooks) and the super-resolution net."""
    arrays, metadata = read_compact(path)
    if metadata.get("kind") != KIND:
        raise CheckpointError(f"{path}: a compressed file, but not a compact Gaussian-head avatar "
                              f"(kind {metadata.get('kind')!r})")
    try:
        head_cfg = config_from_dict(GaussianHeadModuleConfig, metadata["gaussianheadmodule"], f"{path} metadata")
        supres_cfg = config_from_dict(SupResModuleConfig, metadata["supresmodule"], f"{path} metadata")
        tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
        decoded = split_groups({group: tensors[f"codebook.{group}"].float()[tensors[f"index.{group}"]]
                                for group in metadata["groups"]})
        values = {name: decoded.get(name, tensors.get(name)) for name in ("feature", "scales", "rotation")}
        module = GaussianHeadModule(head_cfg, tensors["xyz"].float(), values["feature"].float(),
                                    tensors["landmarks_3d_neutral"].float())
        opacity = tensors["opacity"].float().clamp(OPACITY_EPS, 1 - OPACITY_EPS)
        state = {"xyz": module.xyz, "feature": module.feature, "scales": values["scales"].float(),
                 "rotation": values["rotation"].float(), "opacity": torch.logit(opacity)[:, None],
                 "landmarks_3d_neutral": module.landmarks_3d_neutral}
        state.update({key[len("gaussianhead."):]: value.float() for key, value in tensors.items()
                      if key.startswith("gaussianhead.")})
        module.load_state_dict(state)
        supres = SuperResolutionModule(supres_cfg)
        supres.load_state_dict({key[len("supres."):]: value.float() for key, value in tensors.items()
                                if key.startswith("supres.")})
    except (KeyError, RuntimeError, ValueError, IndexError) as error:
        raise CheckpointError(f"{path}: inconsistent compact avatar ({type(error).__name__}: "
                              f"{str(error).splitlines()[0]})") from None
    return module.to(device), supres.to(device), metadata


def write_report(path: str | os.PathLike, compact_file: Path, raw_files: Dict[str, Path],
                 metadata: Dict[str, Any]) -> Dict[str, Any]:
    """compact_report.json: real bytes on disk of the compressed file vs the raw fp32 checkpoints, and per part."""
    parts: Dict[str, int] = {}
    for name, size in encoded_sizes(compact_file).items():
        part = name.split(".", 1)[0] if "." in name else name
        parts[part] = parts.get(part, 0) + size
    compact_bytes = os.path.getsize(compact_file)
    parts["header_and_checksum"] = compact_bytes - sum(parts.values())
    raw = {kind: os.path.getsize(file) for kind, file in raw_files.items()}
    report = {"file": compact_file.name, "compact_bytes": compact_bytes, "raw_bytes": sum(raw.values()),
              "raw_files": raw, "ratio": sum(raw.values()) / compact_bytes, "parts": parts, **metadata}
    write_bytes_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
    return report


def expand_compact_avatar(path: str | os.PathLike, out_dir: str | os.PathLike) -> Dict[str, Path]:
    """Write a compressed avatar back out as raw fp32 GHA-named checkpoints (`gaussianhead_latest`,
    `supres_latest`) with the decoded attributes, e.g. to fine-tune it or to use tools that expect raw files."""
    module, supres, _ = load_compact_avatar(path, torch.device("cpu"))
    out_dir = Path(out_dir)
    written = {"gaussianhead": out_dir / "gaussianhead_latest", "supres": out_dir / "supres_latest"}
    save_atomic(module.state_dict(), written["gaussianhead"])
    save_atomic(supres.state_dict(), written["supres"])
    return written
