"""What `python view.py` runs: open the avatar, read or track its driver, start the server, serve until Ctrl-C."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import torch

from cgha.apps.driver_video import DriverVideoOptions

from .avatar_source import open_avatar
from .motion import avatar_reference, expression_names, load_driver
from .renderer import FrameRenderer
from .server import AvatarViewer, ViewerOptions

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = {"cpu": 256, "cuda": 1024}  # output height; the CPU renders a GHA-scale avatar in ~1 s at 256


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"


def build_viewer(avatar_path: Path, device: torch.device, options: ViewerOptions, driver: Optional[Path] = None,
                 backend: str = "auto", driver_options: Optional[DriverVideoOptions] = None) -> AvatarViewer:
    """The viewer of the avatar at `avatar_path` (a .cgha file or a raw run folder), with `driver` (a subject folder,
    a video, or a webcam index) to play; not started yet. Errors are one-line UserErrors naming the path."""
    avatar = open_avatar(avatar_path, device)
    sequence = None
    if driver is not None:
        sequence = load_driver(driver, avatar, driver_options or DriverVideoOptions(device=str(device)))
    reference = avatar_reference(avatar, sequence.root if sequence is not None else None)
    renderer = FrameRenderer(avatar, device, backend)
    log.info("avatar %s: %d Gaussians, %d expression coefficients, %.2f MB on disk; driver: %s",
             avatar_path, avatar.model.num_gaussians, avatar.model.expression_dim, avatar.source["total_bytes"] / 1e6,
             f"{sequence.root} ({len(sequence)} frames)" if sequence is not None else "none")
    return AvatarViewer(renderer, expression_names(avatar), reference, sequence, options, device_name(device))


def serve(viewer: AvatarViewer) -> None:
    """Start the viewer and serve until Ctrl-C."""
    url = viewer.start()
    log.info("viewer at %s (Ctrl-C stops it)", url)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        log.info("stopping the viewer")
    finally:
        viewer.stop()
