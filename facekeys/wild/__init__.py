"""Faces in the wild: photos, video and cameras as people have them.

Owns face filters (overlays placed with the keypoints), video and tracking (frame sources and the
video writer, face tracks that place each frame's crop from the last frame's keypoints, the
face-presence check, One Euro smoothing, ``facekeys video``) and the web app.

May import: ``facekeys.tracking`` and every wing below it.
"""
