"""See and drive an avatar in the browser: frames rendered server-side by the avatar's own pipeline (viser).

    python view.py checkpoints/demo/avatar.cgha --driver checkpoints/demo/driver    # then open http://127.0.0.1:8080
    python view.py checkpoints/gaussianhead_synthetic_id0 --driver clip.mp4 --port 8081

Needs the optional extra: pip install -e .[viewer]. Controls and choices: docs/viewer.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cgha.apps.cli import int_at_least, setup_logging
from cgha.apps.driver_video import DriverVideoOptions
from cgha.errors import UserError, exit_on_user_error
from cgha.utils.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("avatar", type=Path, help="a .cgha file or a raw run folder (gaussianhead_latest, "
                                                  "supres_latest, config.yaml)")
    parser.add_argument("--driver", help="a sequence to play: a subject folder, a video (tracked first, reused "
                                          "afterwards) or a webcam index (0, 1, ...: records, then tracks)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network)")
    parser.add_argument("--port", type=int_at_least(0), default=8080, help="port to listen on")
    parser.add_argument("--resolution", type=int_at_least(4), default=None,
                        help="output height at start (default 256 on the CPU, 1024 on a GPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--backend", default="auto", choices=("auto", "gsplat", "torch"), help="rasteriser")
    parser.add_argument("--screenshot-dir", type=Path, default=Path("results/viewer"),
                        help="where the screenshot button saves PNGs")
    parser.add_argument("--fov", type=float, default=None, help="a --driver video's field of view (degrees across "
                                                                "its longer side; default: the tracker's)")
    args = parser.parse_args()
    setup_logging()
    try:
        from cgha.apps.viewer.app import DEFAULT_RESOLUTION, build_viewer, serve
        from cgha.apps.viewer.server import ViewerOptions, check_port_free
    except ModuleNotFoundError as error:
        raise UserError(f"the viewer needs {error.name}: pip install -e .[viewer]") from None
    check_port_free(args.host, args.port)  # before the avatar loads: a taken port fails at once
    device = resolve_device(args.device)
    options = ViewerOptions(host=args.host, port=args.port, screenshot_dir=args.screenshot_dir,
                            resolution=args.resolution or DEFAULT_RESOLUTION[device.type])
    driver = DriverVideoOptions(device=str(device), fov_deg=args.fov)
    serve(build_viewer(args.avatar, device, options, driver=args.driver, backend=args.backend, driver_options=driver))


if __name__ == "__main__":
    exit_on_user_error(main)
