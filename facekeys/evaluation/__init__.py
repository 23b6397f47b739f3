"""Evaluation: how good a model is, on which held-out data.

Owns the metrics (pure functions: NME, RMSE, AUC, CED, paired bootstrap), the held-out splits a
report scores (test, new people, selection), labelled images for scoring, and the reports and
plots of the ``evaluate`` stage.

May import: ``facekeys.inference`` and every wing below it.
"""
