"""`python demo.py --video my.mp4`: track -> monocular Gaussian head with compaction -> held-out evaluation ->
reenactment (the video's own expressions, and a synthetic driver's); see pipeline.py and docs/monocular.md."""
from .pipeline import VideoDemoOptions, format_video_summary, run_video_demo
from .track import MIN_FRAMES, TooFewTrackedFrames, VideoTooShort

__all__ = ["VideoDemoOptions", "format_video_summary", "run_video_demo", "MIN_FRAMES", "TooFewTrackedFrames",
           "VideoTooShort"]
