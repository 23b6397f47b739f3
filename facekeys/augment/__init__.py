"""Augment: training samples from validated images.

Owns the settings of the ``augment`` stage, the split of training rows by identity into train,
selection and new-people parts, sample generation (crops, geometric and photometric transforms,
worker processes) and the preview grid.

May import: ``facekeys.data`` and the foundation (``errors``, ``params``).
"""
