"""Tracking: MLflow runs, the logged model and the registry.

Owns MLflow runs (params, metrics, plots, the model from code, dead-run clean-up), store URIs and
their process-wide scope, bounded HTTP and one-line MLflow errors, the pyfunc model, loading a
predictor from any spec (folder, export, ONNX file, ``models:/`` URI), and the registry gate that
crowns ``@champion``.

May import: ``facekeys.export`` and every wing below it.
"""
