"""Wild: faces as people have them, outside the data sets' crops.

Owns face filters (RGBA overlays with their anchor points, ``overlays``; the geometry that places
an overlay on every face of a frame from its keypoints, ``filters``, pure numpy and OpenCV,
reused per frame by video; ``facekeys filter`` on a photo, ``filter_files``), video with tracking
(frame sources and the writer, ``video_io``; face tracks that place each frame's crop from the
last frame's keypoints, ``face_tracks``, with the face-presence check, ``face_looks`` and
``face_shapes``, and One Euro smoothing, ``one_euro``; ``facekeys video``, ``video_run``), the
web app (``facekeys serve``: ``web_app``, ``web_uploads``, ``web_serve``) and the arguments
of these commands (``commands``).

May import: ``facekeys.tracking`` and every wing below it (models come in as predictors, so the
pure geometry needs nothing above ``facekeys.data``); never ``facekeys.orchestration``.
"""
