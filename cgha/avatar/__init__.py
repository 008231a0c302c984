"""Avatar models behind one interface (`model.AvatarModel`, registry), the `Gaussians` they generate, the post-render
step, and `inference`: loading a raw or compressed avatar and rendering frames (imported from there directly)."""
from cgha.avatar.gaussians import Gaussians
from cgha.avatar.model import AvatarModel, model_class, model_config, model_kinds, register_model

__all__ = ["AvatarModel", "Gaussians", "model_class", "model_config", "model_kinds", "register_model"]
