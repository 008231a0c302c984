"""The `points` config section: how the Gaussians start (the avatar model's own initialisation or a sphere) and the
schedule on which they are pruned and grown (MonoGaussianAvatar, SIGGRAPH 2024; off by default = GHA)."""
from __future__ import annotations

from dataclasses import dataclass

from cgha.errors import ConfigError
from cgha.options import option

INITS = ("model", "sphere")
PARENT_SAMPLING = ("gradient", "uniform")


@dataclass
class PointsSection:
    """Point-cloud initialisation and scheduled insertion/deletion of Gaussians."""
    init: str = option("model", "model: the avatar model's own start (GHA: the trained mesh head); sphere: "
                       "sphere_count points uniformly on a sphere in canonical head space, no mesh head "
                       "(MonoGaussianAvatar)", choices=INITS)
    sphere_count: int = option(400, "points on the initial sphere (MonoGaussianAvatar: 400)", min=4)
    sphere_radius: float = option(1.0, "radius of the initial sphere in canonical head space (the head's radius is "
                                  "about 1)", min=0.0, min_exclusive=True)
    every: int = option(0, "iterations between point edits (prune, then grow); 0 = never (GHA)", min=0)
    stop_iter: int = option(0, "no edits after this iteration; 0 = edits until the end", min=0)
    growth: float = option(2.0, "each edit multiplies the point count by this, up to max_points (MonoGaussianAvatar "
                           "doubles it stage by stage)", min=1.0)
    max_points: int = option(100000, "upper bound of the point count", min=1)
    prune_opacity: float = option(0.005, "edits delete points whose opacity is below this", min=0.0, max=1.0)
    region_radius: float = option(2.5, "edits delete points farther than this from the canonical origin (they "
                                  "left the head's region)", min=0.0, min_exclusive=True)
    parents: str = option("gradient", "where new points are inserted: near points drawn with probability "
                          "proportional to their mean positional gradient since the last edit (gradient: where "
                          "the image still disagrees) or uniformly (uniform: MonoGaussianAvatar's code)",
                          choices=PARENT_SAMPLING)
    jitter: float = option(1.0, "a new point lies uniformly in a cube of this many times its parent's spacing (mean "
                           "distance to 3 neighbours) around the parent", min=0.0)

    @property
    def editing(self) -> bool:
        return self.every > 0

    def only_deletes(self, start: int) -> bool:
        """Whether the edits of a run starting from `start` points could only delete, never insert: it starts at
        or above max_points (e.g. a mesh-head start of ~108k points under MonoGaussianAvatar's 100k)."""
        return self.editing and start >= self.max_points

    def check(self, prefix: str = "points") -> None:
        if self.init == "sphere" and self.sphere_count > self.max_points:
            raise ConfigError(f"'{prefix}.sphere_count' ({self.sphere_count}) is larger than '{prefix}.max_points' "
                              f"({self.max_points})")
        if self.editing and self.stop_iter and self.stop_iter < self.every:
            raise ConfigError(f"'{prefix}.stop_iter' ({self.stop_iter}) is before the first edit at iteration "
                              f"{self.every} ('{prefix}.every'): no edit would run; set {prefix}.every=0 instead")
