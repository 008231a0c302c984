"""A generalizable Gaussian head prior over many identities (OSGAP / HeadGAP on GaussianAvatars' triangle binding):
prior training with DDP (`train_prior.py`), one-shot fitting (`fit_oneshot.py`) and the `prior` avatar model.

Modules: ``config`` (sections and the `prior` model's options), ``geometry`` (the face model's mesh per identity),
``decoder`` (shared conditioned MLPs), ``posing`` (local attributes -> posed Gaussians), ``model`` (the prior),
``avatar`` (the fitted avatar on the avatar interface), ``data`` (identities, shards), ``distributed`` (torchrun
process group), ``train`` (the DDP training loop), ``fit`` (latent inversion and fine-tune). docs/prior.md has the
design and its reasons.
"""
