"""Five optional training add-ons of the GaussianAvatars refactor, each an independent `addons.*` option, off by
default (docs/rigged.md reports what each measurably does):

    region_weights.py       higher photometric weight on eyes, mouth and nose, regions from projected landmarks
    smart_densification.py  clone/split thresholds as percentiles of the densification statistic (rigged model)
    progressive.py          train at 0.5, 0.75, then 1.0 of the resolution
    color_calibration.py    a tiny per-camera colour-correction MLP applied to the training render
    contrastive.py          cosine consistency between renders of adjacent views (a cache of recent renders)
    hooks.py                `TrainingAddons`: what the trainer calls
    config.py               the `addons` config section
"""
