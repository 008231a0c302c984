"""Image grids for people to look at: tensors to uint8 rows and columns with optional labels."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[C, H, W] float in [0, 1] (C = 1 or 3) -> [H, W, 3] uint8."""
    array = image.detach().float().clamp(0, 1).cpu().numpy()
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return (array.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


def normals_to_image(normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Camera-space unit normals [3, H, W] -> a viewable [3, H, W] image (white background)."""
    return (normals * 0.5 + 0.5) * mask + (1 - mask)


def overlay_mask(image: torch.Tensor, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Silhouette agreement over a dimmed image: green = both, red = predicted only, blue = target only."""
    base = image * 0.5
    both, pred_only, target_only = predicted * target, predicted * (1 - target), (1 - predicted) * target
    tint = torch.cat([pred_only, both, target_only], 0)
    return (base + 0.5 * tint).clamp(0, 1)


def grid(rows: Sequence[Sequence[torch.Tensor]], labels: Sequence[str] = ()) -> np.ndarray:
    """Tile images ([C, H, W] each, resized to the first one's size) into rows; label the top row's columns."""
    height, width = rows[0][0].shape[-2:]
    lines = []
    for row in rows:
        tiles = [cv2.resize(to_uint8(image), (width, height), interpolation=cv2.INTER_AREA) for image in row]
        lines.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(lines, axis=0)
    for column, label in enumerate(labels):
        cv2.putText(sheet, label, (column * width + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return sheet
