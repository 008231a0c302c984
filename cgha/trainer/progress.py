"""Early checks that a training stage can make progress at all, so a broken setup stops with the likely causes.

A render that never meets the ground-truth masks has no silhouette gradient: the stage would train to the end on
garbage (issue 24: a 4x wrong `original_resolution` gave a mesh head with silhouette loss pinned at 1.0 and
held-out IoU 0.0, exit status 0). Wrong cameras, resolution, scale or pose convention all look like this, so the
error names all of them.
"""
from __future__ import annotations

from typing import Dict

import torch

from cgha.errors import UserError

LIKELY_CAUSES = ("check the cameras (extrinsic must be world-to-camera, OpenCV axes), dataset.original_resolution "
                 "(the resolution the intrinsics are in pixels of), the head scale (params scale and the model bbox) "
                 "and the pose convention (world = R(pose[:3]) @ (scale * x) + pose[3:]), and that the masks are not "
                 "empty; see docs/conventions.md")
_THRESHOLD = 0.5


class NoProgressError(UserError):
    """A training stage whose renders cannot match the data: training on would only produce garbage."""


def overlapping_pixels(rendered: torch.Tensor, masks: torch.Tensor) -> int:
    """Pixels where both a render's silhouette/alpha and the ground-truth mask exceed 0.5.

    rendered, masks: [..., H, W] of the same shape, values in [0, 1].
    """
    if rendered.shape != masks.shape:
        raise ValueError(f"rendered {list(rendered.shape)} and masks {list(masks.shape)} differ in shape")
    return int(((rendered.detach() > _THRESHOLD) & (masks.detach() > _THRESHOLD)).sum())


def check_silhouette_overlap(silhouettes: torch.Tensor, masks: torch.Tensor, iteration: int) -> None:
    """Mesh head, before training: NoProgressError when no rendered silhouette meets any mask.

    silhouettes, masks: [B, V, 1, H, W] (or any equal shapes) hard render masks and ground-truth masks.
    """
    if overlapping_pixels(silhouettes, masks) == 0:
        views = silhouettes.shape[0] * silhouettes.shape[1] if silhouettes.dim() == 5 else silhouettes.shape[0]
        raise NoProgressError(f"mesh head, iteration {iteration}: the rendered silhouettes overlap none of the "
                              f"{views} ground-truth masks, so training cannot make progress; {LIKELY_CAUSES}")


def check_mesh_progress(metrics: Dict[str, float], iteration: int) -> None:
    """Mesh head, first evaluation: NoProgressError when the held-out mask IoU is 0 (no silhouette overlap).

    metrics: MeshHeadTrainer.evaluate()'s {mask_iou, psnr, views}; empty (no held-out split) passes.
    """
    if metrics and metrics["mask_iou"] <= 0.0:
        raise NoProgressError(f"mesh head, iteration {iteration}: held-out mask IoU 0 over {metrics['views']} "
                              f"views, the silhouettes overlap none of the masks; {LIKELY_CAUSES}")


def check_gaussian_coverage(alpha: torch.Tensor, masks: torch.Tensor, iteration: int) -> None:
    """Gaussian head: NoProgressError when the rendered alpha covers none of the ground-truth masks.

    alpha, masks: [B, 1, H, W] at the same resolution (e.g. the 1/4-resolution render's alpha and the batch's
    `masks_coarse`), values in [0, 1].
    """
    if overlapping_pixels(alpha, masks) == 0:
        raise NoProgressError(f"Gaussian head, iteration {iteration}: the rendered alpha covers none of the "
                              f"{alpha.shape[0]} masks, so training cannot make progress; {LIKELY_CAUSES}")
