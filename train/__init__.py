"""Training of the Norface networks: MAE pre-training, auxiliary nets, the normalization network,
the MoE classifier, evaluation protocols and export to a runtime model set.

Entry point: ``python -m train <stage> --config cfg.json`` (see docs/training.md). Network
definitions are imported from :mod:`norface_rt.models` so training and serving share them.
"""
