"""Inference: keypoints for images people have.

Owns crop geometry, the one prediction path (``KeypointPredictor``: first network, refinement,
label convention), face detectors and their calibrated crop policies, runtimes for exported files
(TorchScript, ONNX, int8 ONNX) and ``facekeys predict`` over files and folders.

May import: ``facekeys.model``, ``facekeys.augment``, ``facekeys.data`` and the foundation.
"""
