"""`python demo.py --video my.mp4`: track -> monocular Gaussian head with compaction -> held-out evaluation ->
reenactment (the video's own expressions, and a synthetic driver's); see pipeline.py and docs/monocular.md.

The pipeline (which trains) is imported on first use, so that `cgha.video_demo.track`, which inference code reuses
to track a driver video (cgha/apps/driver_video.py), does not pull in the training code."""
from .track import MIN_FRAMES, TooFewTrackedFrames, VideoTooShort

_PIPELINE = ("VideoDemoOptions", "format_video_summary", "run_video_demo")


def __getattr__(name):
    if name in _PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_PIPELINE, "MIN_FRAMES", "TooFewTrackedFrames", "VideoTooShort"]
