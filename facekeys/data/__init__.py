"""Data: everything about keypoint data sets before any learning.

Owns the keypoint formats (68-point, Kaggle 15-point), reading CSVs without dropping a record, safe
image access (JPEG, PNG, WebP, BMP, TIFF by content, capped on their headers) and colour
conversion, photos turned upright by their EXIF orientation, the data sets' layout on disk,
fetching a source (folder, zip or URL) and its cheap fingerprint, deriving the Kaggle layout from
the 68-point set, validation (row checks, rules, Great Expectations, the quarantine report),
reading labelled splits, and atomic file writes.

May import: ``facekeys.errors`` and ``facekeys.params`` only (the lowest wing).
"""
