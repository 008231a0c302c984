"""The `model` config section: which avatar model a run trains or loads, its post-render step, and the options
of models other than GHA (GHA keeps its options in GHA's own `gaussianheadmodule` section)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from cgha.options import option

POST_RENDERS = ("super_resolution", "none")


@dataclass
class ModelSection:
    """Avatar model selection (see docs/architecture.md for how to add one)."""
    kind: str = option("gha", "avatar model, by its registered name (gha: GHA's dynamic Gaussian head)")
    post_render: str = option("super_resolution", "after rasterisation: super_resolution (GHA's 4x network, "
                              "supresmodule) or none (the render's RGB channels at the output resolution)",
                              choices=POST_RENDERS)
    options: Dict[str, Any] = option({}, "options of the model kind, checked against its config (not used by gha, "
                                     "whose options are gaussianheadmodule)")
