"""facekeys: a reproducible facial keypoint pipeline.

The package is split into wings, each a sub-package that says what it owns. Imports run one way,
from the bottom up: ``errors``/``params`` <- ``data`` <- ``augment`` <- ``model`` <- ``inference``
<- ``evaluation`` <- ``export`` <- ``tracking`` <- ``orchestration`` <- ``cli``/``stage_runner``
(README, "Code map"; ``tests/unit/test_code_layout.py`` keeps it so).
"""

__version__ = "0.1.0"
