"""Export: shipping a trained model as TorchScript, ONNX and int8 ONNX, each checked.

Owns writing the exported files, int8 quantisation and calibration, and the checks that refuse an
export whose predictions drift from the trained network (measured with the evaluation metrics on
selection crops). Loading exported files for prediction lives in ``facekeys.inference``.

May import: ``facekeys.evaluation`` and every wing below it.
"""
