"""facekeys: a reproducible facial keypoint pipeline."""

__version__ = "0.1.0"
