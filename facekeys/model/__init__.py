"""Model: networks and how they learn.

Owns the network architectures, losses, training settings, devices and precision, the training
loop (prepare, epoch, validate, checkpoint, log), checkpoints and model folders (save, load with
``weights_only=True``, publish as a whole).

May import: ``facekeys.augment``, ``facekeys.data`` and the foundation.
"""
