"""The optional LPIPS (VGG) network, loaded in one place: the `lpips` package needs torchvision and downloads its VGG
weights on first use, which is impossible offline, so it is used only when both are present — never faked."""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from cgha.errors import ConfigError


def load_lpips(enabled: bool, device: torch.device) -> Tuple[Optional[Callable], str]:
    """(LPIPS-VGG network or None, status): status is "ok", "disabled" (not asked for) or "unavailable: <reason>"
    when the optional `lpips` package or its downloaded weights cannot be loaded."""
    if not enabled:
        return None, "disabled"
    try:
        import lpips

        network = lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)
    except Exception as error:  # an ImportError, or the VGG weights cannot be downloaded offline
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
        return None, f"unavailable: {type(error).__name__}: {reason}"
    return network, "ok"


def load_lpips_loss(weight: float, device: torch.device) -> Optional[Callable]:
    """The LPIPS loss network when its weight (`train.loss_weights.vgg`) is > 0; ConfigError when unavailable."""
    network, status = load_lpips(weight > 0, device)
    if status.startswith("unavailable"):
        raise ConfigError(f"'train.loss_weights.vgg' is {weight} but LPIPS is {status}; install `lpips` with its "
                          f"weights or set train.loss_weights.vgg=0")
    return network
