"""Loading one camera view of one frame as tensors, shared by the training datasets."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from cgha.dataset.subject import Subject
from cgha.utils.image_io import read_mask, read_rgb


def load_view(subject: Subject, frame: str, camera: str, resolution: int, lowres: bool = False) -> Dict[str, torch.Tensor]:
    """Image, mask, visibility and camera of one view at `resolution`^2.

    Returns: image [3, R, R] (as stored, with background), mask [1, R, R], visible [1, R, R] (ones when the subject
    has no visible_*.jpg), intrinsics [3, 3] in pixels of the R^2 image, viewmat [4, 4] world-to-camera,
    extrinsics [3, 4].
    """
    layout = subject.layout
    image = read_rgb(layout.image(frame, camera, lowres), resolution)
    mask = read_mask(layout.mask(frame, camera, lowres), resolution)
    visible_path = layout.visible(frame, camera, lowres)
    visible = read_mask(visible_path, resolution) if visible_path.is_file() else np.ones_like(mask)
    intrinsic, viewmat = subject.camera_matrices(frame, camera, resolution)
    return {
        "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
        "mask": torch.from_numpy(mask)[None],
        "visible": torch.from_numpy(visible)[None],
        "intrinsics": torch.from_numpy(intrinsic),
        "viewmat": torch.from_numpy(viewmat),
        "extrinsics": torch.from_numpy(viewmat[:3].copy()),
    }


def frame_params(subject: Subject, frame: str) -> Dict[str, torch.Tensor]:
    """Per-frame head pose [6], scale [1], expression [D], landmarks_3d [K, 3] and exp_id (stable frame index)."""
    index = subject.frame_index[frame]
    return {
        "pose": torch.from_numpy(subject.pose[index]),
        "scale": torch.from_numpy(subject.scale[index]),
        "exp_coeff": torch.from_numpy(subject.exp_coeff[index]),
        "landmarks_3d": torch.from_numpy(subject.landmarks[index]),
        "exp_id": torch.tensor(index, dtype=torch.long),
    }
