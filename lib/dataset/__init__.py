"""Readers of the GHA / NeRSemble-preprocessed subject layout (docs/conventions.md)."""
from lib.dataset.gaussian_dataset import GaussianDataset
from lib.dataset.layout import SubjectLayout
from lib.dataset.loader import make_loader
from lib.dataset.mesh_dataset import MeshDataset
from lib.dataset.reenactment_dataset import ReenactmentDataset
from lib.dataset.subject import SPLITS, Subject

__all__ = ["GaussianDataset", "MeshDataset", "ReenactmentDataset", "Subject", "SubjectLayout", "SPLITS", "make_loader"]
