"""The main job: a compact, animatable Gaussian head avatar, end to end, from the synthetic subject or your video.

Without --video: generates two synthetic identities (if absent), trains the mesh head and the Gaussian head with
codebook compaction on identity 0, evaluates the compact avatar on held-out cameras and frames, and renders
identity 0 driven by identity 1's expressions as a free-view video.

With --video: tracks the video's face (cgha.tracking), trains a mesh head on it and a monocular Gaussian head from
the mesh head's points with point insertion/deletion and compaction, evaluates it on the last 15 % of the frames
(held out), and renders it with the video's own expressions and with the synthetic identity 1's (docs/monocular.md).
Needs the tracker's MediaPipe (README, docs/tracking.md).

Both print one summary table and the output paths.

    python demo.py                        # CPU: the demo schedule (config/*_synthetic_demo.yaml)
    python demo.py --device cuda          # GPU: the full schedule (config/*_synthetic.yaml), better quality
    python demo.py --video my.mp4         # CPU: config/train_gaussianhead_monocular_demo.yaml (says how long first)
    python demo.py --video my.mp4 --device cuda   # GPU: config/train_gaussianhead_monocular.yaml
    python demo.py --video my.mp4 --start sphere  # MonoGaussianAvatar's sphere start instead of a mesh head

Re-running continues an interrupted demo; delete checkpoints/, log/ and results/ runs to start over.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from cgha.apps.cli import int_at_least, setup_logging
from cgha.demo import SCALES, default_scale, format_summary, run_demo
from cgha.errors import exit_on_user_error
from cgha.utils.device import resolve_device

ROOT = Path(__file__).resolve().parent


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--scale", choices=sorted(SCALES), default=None,
                        help="synthetic demo schedule: demo (the default on CPU) or full (the default on a GPU)")
    video = parser.add_argument_group("your own video (--video)")
    video.add_argument("--video", type=Path, default=None, help="a video of one face (mp4, mov, ...)")
    video.add_argument("--out", type=Path, default=None, help="tracked subject folder (default: data/video_<stem>)")
    video.add_argument("--fov", type=_float, default=None,
                       help="camera field of view across the longer side of the frame, degrees (default 65; a "
                            "35 mm-equivalent focal length f gives 2*atan(18/f))")
    video.add_argument("--max-frames", type=int_at_least(1), default=None, help="track at most this many frames")
    video.add_argument("--start", choices=("mesh-head", "sphere"), default="mesh-head",
                       help="where the avatar's points start: mesh-head (default; a mesh head is trained on the "
                            "tracked video first, about 90 s on 2 CPU cores or an H100) or sphere "
                            "(MonoGaussianAvatar's start, no mesh head; 1.5-3 dB worse, docs/points.md)")
    video.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=None,
                       help="refine the tracked head poses photometrically (track.py --photometric; default: on a GPU, "
                            "where it takes seconds, off on the CPU, about 2.7 s per frame at 256²; +1.8 dB on the "
                            "held-out frames of the CPU demo, docs/monocular.md)")
    args = parser.parse_args()
    if args.video is None and (args.out or args.fov is not None or args.max_frames or args.start != "mesh-head"
                               or args.photometric is not None):
        parser.error("--out, --fov, --max-frames, --start and --[no-]photometric belong to --video")
    if args.video is not None and args.scale:
        parser.error("--scale belongs to the synthetic demo; with --video the device picks the config")
    setup_logging()
    device = resolve_device(args.device)
    # The configs name repo-relative data and output paths; the user's paths are taken from where they typed them.
    video_path = args.video.resolve() if args.video is not None else None
    out = args.out.resolve() if args.out is not None else None
    os.chdir(ROOT)
    if video_path is not None:
        from cgha.video_demo import VideoDemoOptions, format_video_summary, run_video_demo

        summary = run_video_demo(VideoDemoOptions(video_path, device, out=out, fov_deg=args.fov,
                                                  max_frames=args.max_frames,
                                                  mesh_head=args.start == "mesh-head",
                                                  photometric=args.photometric))
        print(format_video_summary(summary))
        return
    scale = SCALES[args.scale or default_scale(device)]
    summary = run_demo(Path("config"), scale, device, Path("results"))
    print(format_summary(summary))


if __name__ == "__main__":
    exit_on_user_error(main)
