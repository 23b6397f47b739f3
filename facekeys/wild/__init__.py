"""Wild: faces as people have them, outside the data sets' crops.

Owns photos as people take them, face filters (overlays placed with the keypoints), video with
tracking, and the web app (``facekeys serve``).

May import: ``facekeys.tracking`` and every wing below it; never ``facekeys.orchestration``.
"""
