"""`TrainingAddons`: the add-ons a run enables, behind the few calls the Gaussian-head trainer makes.

    addons = TrainingAddons(cfg.addons, num_cameras, device)
    batch = addons.prepare_batch(batch, iteration, total)      # region weights, progressive resolution
    calibrate = addons.calibration(batch)                      # None, or render -> calibrated render
    losses.update(addons.losses(visuals, batch))               # contrastive, color_calibration
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from torch import nn

from cgha.addons.color_calibration import ColorCalibration
from cgha.addons.config import AddonsSection
from cgha.addons.contrastive import AdjacentViewCache
from cgha.addons.progressive import downsampled_batch, resolution_scale
from cgha.addons.region_weights import weighted_batch


class TrainingAddons:
    def __init__(self, cfg: AddonsSection, num_cameras: int, device: torch.device):
        self.cfg = cfg
        self.calibrator = (ColorCalibration(num_cameras, cfg.calibration_hidden, cfg.calibration_code_dim,
                                            cfg.calibration_zero_mean).to(device)
                           if cfg.color_calibration else None)
        self.cache = AdjacentViewCache(cfg.contrastive_cache, cfg.contrastive_max_angle) if cfg.contrastive else None

    def parameters(self) -> List[nn.Parameter]:
        return list(self.calibrator.parameters()) if self.calibrator is not None else []

    def prepare_batch(self, batch: Dict[str, torch.Tensor], iteration: int, total: int) -> Dict[str, torch.Tensor]:
        """The training batch the losses see: at the progressive resolution, with region weights in `visibles`."""
        cfg = self.cfg
        if cfg.progressive_resolution:
            scale = resolution_scale(iteration, total, cfg.resolution_scales, cfg.resolution_milestones)
            batch = downsampled_batch(batch, scale)
        if cfg.region_weights:
            weights = {"eye": cfg.eye_weight, "mouth": cfg.mouth_weight, "nose": cfg.nose_weight}
            batch = weighted_batch(batch, weights, cfg.region_margin)
        return batch

    def calibration(self, batch: Dict[str, torch.Tensor]) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        if self.calibrator is None:
            return None
        return lambda render: self.calibrator(render, batch["view_id"])

    def losses(self, visuals: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Extra loss terms by weight name."""
        out: Dict[str, torch.Tensor] = {}
        if self.calibrator is not None and self.calibrator.last_residual is not None:
            out["color_calibration"] = self.calibrator.regulariser()
        if self.cache is not None:
            term = self.cache.loss(visuals["render"], batch["viewmat"], batch["view_id"])
            if term is not None:
                out["contrastive"] = term
        return out

    def state_dict(self) -> Dict[str, Any]:
        return {"color_calibration": self.calibrator.state_dict()} if self.calibrator is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.calibrator is not None and "color_calibration" in state:
            self.calibrator.load_state_dict(state["color_calibration"])
