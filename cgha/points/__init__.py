"""Point insertion and deletion (MonoGaussianAvatar's growth schedule) and point-cloud initialisation.

    config.py    the `points` config section, owned by this package
    sphere.py    N0 points uniformly on a sphere in canonical head space (MonoGaussianAvatar's start)
    edit.py      the functional core: select/duplicate Gaussian rows of a model, its optimiser state and its
                 quantiser indices, consistently
    strategy.py  `PointStrategy`: when to prune and grow, which points, its resume state
"""
from .config import PointsSection
from .edit import edit_gaussians
from .sphere import sphere_points
from .strategy import PointStrategy

__all__ = ["PointsSection", "PointStrategy", "edit_gaussians", "sphere_points"]
