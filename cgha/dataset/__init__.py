"""Readers of the GHA / NeRSemble-preprocessed subject layout (docs/conventions.md)."""
from cgha.dataset.gaussian_dataset import GaussianDataset
from cgha.dataset.layout import SubjectLayout
from cgha.dataset.loader import make_loader
from cgha.dataset.mesh_dataset import MeshDataset
from cgha.dataset.reenactment_dataset import ReenactmentDataset
from cgha.dataset.subject import SPLITS, Subject

__all__ = ["GaussianDataset", "MeshDataset", "ReenactmentDataset", "Subject", "SubjectLayout", "SPLITS", "make_loader"]
