"""Faces in the wild: what is done with the faces predicted in photos (and, later, video).

Owns face filters: RGBA overlays with their anchor points (``overlays``), the geometry that
places an overlay on every face of a frame from its keypoints (``filters``: pure numpy and
OpenCV, reused per frame by video code) and ``facekeys filter`` on a photo file
(``filter_files``).

May import: ``facekeys.tracking`` and every wing below it (models come in as predictors, so
the pure geometry needs nothing above ``facekeys.data``).
"""
