"""A tiny avatar for the viewer's and the driver's tests: an untrained GHA avatar of a few hundred Gaussians on a
head-sized ellipsoid, with random networks, saved as a .cgha file that records a subject (neutral pose, scale 0.125,
the synthetic expression basis), so it renders a visible head whose image moves with every expression coefficient.
Built directly rather than trained: the viewer and the driver only need a valid avatar, and training would dominate
their run time."""
from __future__ import annotations

from pathlib import Path

import torch

from cgha.avatar.subject import AvatarSubject
from cgha.compact.avatar_file import save_compact_avatar
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
from cgha.config import TrainConfig, load_config
from cgha.dataset.expression_basis import ExpressionBasis
from cgha.module.gaussian_head import GAUSSIAN_FEATURE_DIM, GaussianHeadModule
from cgha.module.super_resolution import SuperResolutionModule
from cgha.synthetic.expression import EXPRESSION_MODEL, EXPRESSION_NAMES

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_POSE = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
REFERENCE_SCALE = 0.125


def build_tiny_avatar(path: Path, count: int = 600, seed: int = 0) -> Path:
    """Write the tiny avatar to `path` (.cgha); returns it."""
    cfg = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml",
                      ["compact.codebook_size=32", "gaussianheadmodule.num_add_mouth_points=0"], stage="gaussianhead")
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(count, 3, generator=generator)
    xyz = direction / direction.norm(dim=1, keepdim=True) * torch.tensor([0.8, 1.0, 0.9])  # canonical head, radius ~1
    landmarks = xyz[torch.randperm(count, generator=generator)[:68]].clone()
    feature = torch.randn(count, GAUSSIAN_FEATURE_DIM, generator=generator)
    torch.manual_seed(seed)
    module = GaussianHeadModule(cfg.gaussianheadmodule, xyz, feature, landmarks)
    supres = SuperResolutionModule(cfg.supresmodule)
    quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(GaussianHeadModule), seed=seed)
    with torch.no_grad():
        quantizer.initialise({key: value.detach() for key, value in module.canonical_attributes().items()})
    subject = AvatarSubject(REFERENCE_POSE, REFERENCE_SCALE, ExpressionBasis(EXPRESSION_MODEL, EXPRESSION_NAMES))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_compact_avatar(path, module, supres, quantizer, cfg.compact.store, subject=subject.to_dict())
    return path
