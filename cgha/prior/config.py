"""Config of prior training (`train_prior.py`) and one-shot fitting (`fit_oneshot.py`), and the options of the
`prior` avatar model (`model.options`, shared by the prior and every avatar fitted from it).

    cfg = load_prior_config("config/train_prior_demo.yaml", ["train.iters=200"])
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

from cgha.avatar.config import ModelSection
from cgha.config import RecorderConfig, RenderSection, load_config
from cgha.errors import ConfigError
from cgha.options import option, section
from cgha.tracking.face_model import DEFAULT_NUM_COMPONENTS, DEFAULT_NUM_SAMPLES

IDENTITY_SOURCES = ("codes", "encoder")


@dataclass
class PriorModelConfig:
    """`model.options` of the `prior` avatar model: the decoder's sizes and the face model it is bound to."""
    num_gaussians: int = option(8000, "Gaussians, one per face-model triangle (chosen area-weighted, seeded); at most "
                                      "the topology's 32000 triangles", min=16)
    embedding_dim: int = option(32, "per-Gaussian embedding shared by every identity (the decoders' point input)",
                                min=1)
    latent_dim: int = option(64, "identity latent code", min=1)
    hidden_dim: int = option(128, "width of the decoders' hidden layers", min=1)
    static_layers: int = option(3, "hidden layers of the identity decoder (latent -> per-Gaussian attributes)", min=1)
    dynamic_layers: int = option(2, "hidden layers of the expression decoder (latent, expression, head rotation -> "
                                    "colour and offset changes)", min=1)
    exp_coeffs_dim: int = option(16, "expression coefficients (the face model's expression space)", min=1)
    face_model_samples: int = option(DEFAULT_NUM_SAMPLES, "face model build: identity samples of its PCA "
                                                          "(cgha.tracking.face_model)", min=2)
    face_model_components: int = option(DEFAULT_NUM_COMPONENTS, "face model build: identity components", min=1)
    identity_source: str = option("codes", "how a training identity gets its latent: 'codes' (auto-decoder: a "
                                           "learned code per identity; a new person's is found by inversion) or "
                                           "'encoder' (an image encoder, trained with the decoders, reads one view; "
                                           "a new person's latent is its output, refined by inversion)",
                                  choices=IDENTITY_SOURCES)
    encoder_width: int = option(32, "encoder: channels of its first convolution (doubled per stride-2 layer, up to "
                                    "8x)", min=1)
    encoder_resolution: int = option(64, "encoder: images are resized to this side before it reads them", min=16)
    seed: int = option(0, "seed of the triangle choice and the networks' initialisation", min=0)

    def check(self) -> None:
        if self.face_model_components >= self.face_model_samples:
            raise ConfigError(f"'model.options.face_model_components' ({self.face_model_components}) must be smaller "
                              f"than 'model.options.face_model_samples' ({self.face_model_samples})")


@dataclass
class PriorDataSection:
    """The K training identities: synthetic subjects `{root}/id{i:04d}`, generated when missing."""
    root: str = option("data/prior", "folder of the identity subjects")
    num_identities: int = option(8, "K: identities first_identity .. first_identity + K - 1", min=1)
    first_identity: int = option(100, "generator index of the first identity (0..99 are left for held-out tests)",
                                 min=0)
    generate: bool = option(True, "generate missing identities (make_synthetic.py's generator; each process makes "
                                  "its own shard)")
    frames: int = option(8, "generated identities: frames", min=1)
    cameras: int = option(8, "generated identities: cameras", min=1)
    resolution: int = option(64, "image side: generated and trained at (no post-render step)", min=16)
    seed: int = option(0, "generated identities: expression/pose trajectory seed", min=0)


@dataclass
class PriorTrainSection:
    """Prior training length, batch, learning rates and loss weights."""
    iters: int = option(500, "training steps", min=1)
    identities_per_step: int = option(4, "global batch of identities per step, split evenly over the processes",
                                      min=1)
    views_per_identity: int = option(2, "images (random frame and camera) per identity per step", min=1)
    lr: float = option(2e-3, "learning rate of the decoders and the per-Gaussian embeddings", min=0.0)
    lr_latent: float = option(1e-2, "learning rate of the identity latent codes", min=0.0)
    latent_weight: float = option(1e-3, "weight of the latent codes' squared norm (the auto-decoder's prior)",
                                  min=0.0)
    offset_weight: float = option(1e-2, "weight of the mean squared offset of a Gaussian from its triangle (in "
                                        "units of Gaussian spacing), as GaussianAvatars' position loss", min=0.0)
    seed: int = option(0, "sampling seed (identities and views of step t come from (seed, t): resume is exact)",
                       min=0)
    resume: bool = option(True, "continue from {checkpoint_path}/{name}/prior_latest when present")


@dataclass
class OneShotSection:
    """fit_oneshot.py: latent inversion, then a short fine-tune regularised toward the prior."""
    invert_steps: int = option(200, "steps optimising only the identity latent code", min=0)
    invert_lr: float = option(3e-2, "learning rate of the latent inversion", min=0.0)
    latent_weight: float = option(1e-2, "inversion: weight of the code's squared distance to the training codes' "
                                        "mean, per latent dimension", min=0.0)
    finetune_steps: int = option(200, "steps fine-tuning every parameter of the avatar", min=0)
    finetune_lr: float = option(2e-3, "learning rate of the fine-tune", min=0.0)
    # 100, not 1: at 1 the fine-tune over-fitted the one image (novel views 1.4 dB below inversion alone on three
    # held-out identities); at 100 it keeps novel views and still fits the image 2-3 dB closer (docs/prior.md).
    prior_weight: float = option(100.0, "fine-tune: weight of the parameters' mean squared change from the inverted "
                                      "prior (the regularisation toward the prior)", min=0.0)
    resolution: int = option(0, "image side to fit at; 0 = the prior's training resolution", min=0)


@dataclass
class PriorConfig:
    """Configuration of train_prior.py (and the fitting defaults fit_oneshot.py reads from a prior)."""
    device: str = option("auto", "auto (CUDA if present), cpu, cuda or cuda:N; under torchrun each process takes "
                                 "cuda:LOCAL_RANK")
    data: PriorDataSection = section(PriorDataSection)
    model: ModelSection = section(ModelSection)
    train: PriorTrainSection = section(PriorTrainSection)
    fit: OneShotSection = section(OneShotSection)
    recorder: RecorderConfig = section(RecorderConfig)
    render: RenderSection = section(RenderSection)


def check_prior_config(cfg: PriorConfig) -> None:
    """Cross-key rules of a prior config; ConfigError naming the key."""
    if cfg.model.kind != "prior":
        raise ConfigError(f"'model.kind' is {cfg.model.kind!r}: train_prior.py trains the 'prior' model")
    if cfg.model.post_render != "none":
        raise ConfigError(f"'model.post_render' is {cfg.model.post_render!r}: the prior renders RGB directly (none)")
    if cfg.data.resolution % 4:
        raise ConfigError(f"'data.resolution' must be a multiple of 4 (the dataset's coarse copy), got "
                          f"{cfg.data.resolution}")


def load_prior_config(path: Optional[str | os.PathLike], overrides: Sequence[str] = ()) -> PriorConfig:
    """The config of `path` with `key=value` overrides, strictly checked (cgha.config's loader)."""
    kind = _model_kind(path, overrides)
    if kind != "prior":
        # Said before loading: the loader would validate the options of that other model against this schema.
        raise ConfigError(f"'model.kind' is {kind!r}: train_prior.py trains the 'prior' model")
    cfg = load_config(PriorConfig, path, overrides)
    check_prior_config(cfg)
    return cfg


def _model_kind(path: Optional[str | os.PathLike], overrides: Sequence[str]) -> object:
    """`model.kind` as the file and the overrides set it (the last override wins; ModelSection's default else)."""
    import yaml

    kind: object = ModelSection().kind
    if path is not None and os.path.isfile(path):
        try:
            data = yaml.safe_load(open(path).read()) or {}
        except yaml.YAMLError:
            data = {}  # the loader reports the syntax error with its line
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and "kind" in model:
            kind = model["kind"]
    for item in overrides:
        if item.strip().startswith("model.kind="):
            kind = item.split("=", 1)[1].strip()
    return kind
