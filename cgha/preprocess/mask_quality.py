"""Mask quality of a preprocessed synthetic raw capture: IoU of the written masks against the generator's exact ones.

    python -c "from cgha.preprocess.mask_quality import mask_iou_report as r; print(r('data/pp/000', 'data/raw'))"

The ground-truth masks (cgha/synthetic/raw_capture.py) are at raw resolution; they go through the same crop and
resize as the images (the crops are read from preprocess.json) and are compared at 0.5, like the written masks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import cv2
import numpy as np

from cgha.dataset.layout import SubjectLayout
from cgha.errors import DataError
from cgha.synthetic.raw_capture import ground_truth_masks

from .crop import SquareCrop, crop_resize
from .masks import mask_iou
from .plan import frame_sources, read_manifest

__all__ = ["mask_iou_report"]


def mask_iou_report(subject_dir, raw_root) -> Dict[str, object]:
    """{"mean": mean IoU over views, "min": worst view's IoU, "views": {(frame, camera): IoU}}."""
    layout = SubjectLayout(Path(subject_dir))
    manifest = read_manifest(layout.root)
    if manifest is None:
        raise DataError(f"{layout.root} has no preprocess.json: not written by preprocess_nersemble.py")
    size = manifest["settings"]["size"]
    subject = manifest["settings"]["subject"]
    views = {}
    for frame, (sequence, index) in frame_sources(manifest).items():
        truth = ground_truth_masks(raw_root, subject, sequence, index)
        for camera in manifest["settings"]["cameras"]:
            mask = cv2.imread(str(layout.mask(frame, camera)), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise DataError(f"{layout.mask(frame, camera)}: missing or unreadable")
            reference = crop_resize(truth[camera], SquareCrop(*manifest["crop"][camera]), size)
            views[(frame, camera)] = mask_iou(mask, reference)
    values = np.array(list(views.values()))
    return {"mean": float(values.mean()), "min": float(values.min()), "views": views}
