"""`python view.py AVATAR`: a browser viewer (viser) of an avatar rendered server-side by its own pipeline.

avatar_source: which avatar a path names; camera: browser camera <-> viewmat/K; motion: driver sequences and head
pose relative to the avatar's neutral pose; renderer: one timed frame; server: the viser GUI and per-client render
threads; app: what view.py runs. docs/viewer.md explains the controls and the choices.
"""
