"""Where a re-tracked subject's quality goes: hybrid subjects that take one part of the truth into the re-tracked one.

A re-tracked multi-view subject differs from its synthetic truth in three parts: the masks (selfie segmentation
instead of the renderer's), the head placement (the fitted pose and scale per frame) and the expression codes. Each
hybrid is the re-tracked subject (its images, cameras and split) with the named parts replaced by the truth's:

- `masks`: every `mask*` image of the truth's;
- `pose`: `pose` and `scale` of every frame; the fitted landmarks and vertices are carried along rigidly (into the
  canonical space with the tracked pose and scale, out with the truth's), so they stay the tracked face shape;
- `expression`: `exp_coeff` of every frame (landmarks and vertices left as fitted: they feed only the mesh head's
  landmark term and its initial landmarks).

Images are symbolic links to the re-tracked subject's files (the same pixels), masks to the truth's; params are
written. Used by `bench_retracked.py --attribute`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from cgha.module.mesh_head import pose_to_world, world_to_canonical
from cgha.utils.atomic import write_directory_atomic

PARTS = ("masks", "pose", "expression")


def _relocate(points: np.ndarray, source: dict, target: dict) -> np.ndarray:
    """World points [M, 3] fitted under `source`'s pose/scale -> the same canonical points under `target`'s."""
    as_tensor = lambda params, key: torch.from_numpy(np.asarray(params[key], np.float64)).reshape(1, -1)
    canonical = world_to_canonical(torch.from_numpy(points.astype(np.float64))[None], as_tensor(source, "pose"),
                                   as_tensor(source, "scale"))
    return pose_to_world(canonical, as_tensor(target, "pose"), as_tensor(target, "scale"))[0].numpy().astype(
        points.dtype)


def hybrid_subject(tracked: Path, truth: Path, out: Path, parts: Iterable[str]) -> Path:
    """Write the re-tracked subject `tracked` with `parts` (a subset of PARTS) taken from `truth` into `out`
    (replaced when it exists; written atomically, so an error leaves `out` as it was) -> `out`. Both subjects must
    have the same frames and cameras."""
    parts = set(parts)
    unknown = parts - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {list(PARTS)}")
    frames = json.loads((tracked / "meta.json").read_text())["frame_names"]
    truth_frames = json.loads((truth / "meta.json").read_text())["frame_names"]
    if frames != truth_frames:
        raise ValueError(f"{tracked} has frames {frames[:3]}... but {truth} has {truth_frames[:3]}...")
    def write(root: Path) -> None:
        for item in tracked.iterdir():
            if item.name not in ("images", "params"):
                os.symlink(item.resolve(), root / item.name)
        for frame in frames:
            (root / "images" / frame).mkdir(parents=True)
            for image in sorted((tracked / "images" / frame).iterdir()):
                source = truth if (image.name.startswith("mask") and "masks" in parts) else tracked
                path = source / "images" / frame / image.name
                if not path.is_file():
                    raise ValueError(f"{path} is missing: the truth has no {image.name} for frame {frame}")
                os.symlink(path.resolve(), root / "images" / frame / image.name)
            params_dir = root / "params" / frame
            params_dir.mkdir(parents=True)
            fitted = dict(np.load(tracked / "params" / frame / "params.npz"))
            real = dict(np.load(truth / "params" / frame / "params.npz"))
            params = dict(fitted)
            if "pose" in parts:
                params["pose"], params["scale"] = real["pose"], real["scale"]
            if "expression" in parts:
                params["exp_coeff"] = real["exp_coeff"]
            np.savez(params_dir / "params.npz", **params)
            for name in ("lmk_3d.npy", "vertices.npy"):
                points = np.load(tracked / "params" / frame / name)
                np.save(params_dir / name, _relocate(points, fitted, params) if "pose" in parts else points)

    write_directory_atomic(out, write)
    return out
