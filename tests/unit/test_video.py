"""Video tracking: the One Euro filter, the similarity fit behind the presence check, and faces
followed through synthetic clips by a fake predictor whose true points are known."""

from __future__ import annotations

import numpy as np
import pytest

from facekeys.wild.face_tracks import FaceTracker, TrackerSettings
from facekeys.wild.one_euro import OneEuroFilter, OneEuroSettings
from tests.unit.video_fakes import FakePredictor, clip_face, frames_of

FPS = 30.0
FACE_SPREAD = 30.0  # px: a face of about 90 px


def _run_filter(values: np.ndarray, settings: OneEuroSettings, fps: float = FPS) -> np.ndarray:
    smooth = OneEuroFilter(settings)
    return np.array([smooth(np.array([v]), k / fps, FACE_SPREAD)[0] for k, v in enumerate(values)])


def test_one_euro_keeps_a_constant_signal_constant():
    out = _run_filter(np.full(50, 3.25), OneEuroSettings())
    assert np.array_equal(out, np.full(50, 3.25))


def test_one_euro_follows_a_step_where_a_plain_low_pass_lags():
    values = np.r_[np.zeros(30), np.full(30, 60.0)]  # two face sizes in one frame
    fast = _run_filter(values, OneEuroSettings(min_cutoff=1.0, beta=0.5))
    plain = _run_filter(values, OneEuroSettings(min_cutoff=1.0, beta=0.0))  # no speed term
    after = 30 + 3  # 0.1 s after the step
    assert fast[after] > 55, "the speed term opens the filter: little lag"
    assert plain[after] < 45, "the same filter without it lags (the test can tell)"


#: One Euro settings for the fake's 1 px noise on a 1.5 px/frame motion.
NOISY = OneEuroSettings(min_cutoff=1.0, beta=4.0)


def test_one_euro_reduces_noise_at_rest_and_does_not_depend_on_the_frame_rate():
    rng = np.random.default_rng(0)
    noisy = 50 + rng.normal(0, 1.0, 300)
    # A speed term for noise this large (the shipped default is tuned to a real model's much
    # smaller frame-to-frame noise, see README "Video").
    out = _run_filter(noisy, NOISY)
    assert out[30:].std() < 0.5 * noisy[30:].std()
    assert abs(out[30:].mean() - 50) < 0.3, "smoothing, not a bias"
    # A ramp sampled at 30 and at 60 frames/s: the same output at the same moments.
    ramp30 = _run_filter(np.arange(30) * 2.0, NOISY, fps=30)
    ramp60 = _run_filter(np.arange(60) * 1.0, NOISY, fps=60)
    assert np.allclose(ramp30[-1], ramp60[-2], atol=1.0)


def test_one_euro_lets_nan_through_without_keeping_it():
    smooth = OneEuroFilter()
    smooth(np.array([1.0, 2.0]), 0.0)
    assert np.isnan(smooth(np.array([np.nan, 2.0]), 0.1)[0])
    assert smooth(np.array([5.0, 2.0]), 0.2)[0] == 5.0, "a coordinate restarts after NaN"
    with pytest.raises(ValueError, match="min_cutoff must be a positive number"):
        OneEuroFilter(OneEuroSettings(min_cutoff=0.0))


def _follow(predictor: FakePredictor, frames, settings: TrackerSettings):
    tracker = FaceTracker(predictor, settings)
    return tracker, [tracker.step(frame, k / FPS) for k, frame in enumerate(frames)]


def test_the_crop_follows_a_moving_turning_face_and_the_detector_runs_every_n_frames():
    truth = clip_face(70)
    predictor = FakePredictor([t[None] for t in truth])
    settings = TrackerSettings(detect_every=25, smoothing=None)
    tracker, results = _follow(predictor, frames_of(predictor.truth), settings)

    assert predictor.detector_frames == [0, 25, 50]
    assert tracker.losses == 0 and tracker.faces == 1
    for (index, square), face in zip(predictor.squares, truth[1:], strict=False):
        # Each square was placed from the previous frame's points and still frames the face.
        centre = np.array(square[:2]) + square[2] / 2
        assert index not in (0, 25, 50)
        assert np.linalg.norm(centre - face.mean(axis=0)) < 0.1 * square[2]
    errors = [np.abs(r[0].points - t).max() for r, t in zip(results, truth, strict=True)]
    assert max(errors) < 2.0, "points from followed crops, not collapsed ones"
    assert [r[0].face for r in results] == [0] * 70


def test_smoothing_takes_jitter_out_without_costing_accuracy_on_a_moving_face():
    truth = clip_face(90)  # moving 1.5 px a frame, turning by up to 20 degrees, scaling

    def follow(smoothing):
        predictor = FakePredictor([t[None] for t in truth], noise_px=1.0)
        _, results = _follow(
            predictor, frames_of(predictor.truth), TrackerSettings(smoothing=smoothing)
        )
        errors = np.array([r[0].points for r in results])[10:] - truth[10:]
        jitter = np.linalg.norm(np.diff(errors, axis=0), axis=-1).mean()
        return jitter, np.linalg.norm(errors, axis=-1).mean()

    smoothed, raw = follow(NOISY), follow(None)
    assert smoothed[0] < 0.8 * raw[0], "less frame-to-frame jitter"
    assert smoothed[1] < raw[1], "and no lag that would cost more than the noise it removes"
    heavy = follow(OneEuroSettings(min_cutoff=1.0, beta=0.0))
    assert heavy[1] > raw[1], "a plain low-pass lags behind (the test can tell)"


def test_a_face_that_disappears_is_lost_and_searched_for_until_it_is_back():
    truth = [t[None] for t in clip_face(40)]
    for k in range(12, 16):
        truth[k] = np.zeros((0, 68, 2))  # frames of noise: nobody there
    predictor = FakePredictor(truth)
    settings = TrackerSettings(detect_every=25, smoothing=None)
    tracker, results = _follow(predictor, frames_of(truth), settings)

    # Lost at frame 12 (the presence check) and searched for in that frame and every frame
    # until it is found at 16; then the count of 25 frames starts again.
    assert predictor.detector_frames == [0, 12, 13, 14, 15, 16]
    assert tracker.losses == 1
    assert [len(r) for r in results[12:16]] == [0, 0, 0, 0], "no ghost on the noise"
    assert len(results[16]) == 1 and np.abs(results[20][0].points - truth[20][0]).max() < 2.0


def test_a_face_shaped_ghost_on_background_is_caught_by_the_look_of_the_face():
    """Real networks answer face-shaped points on a crop without a face: the shape passes, the
    pixels under it do not look like the face."""
    truth = [t[None] for t in clip_face(30)]
    for k in range(12, 30):
        truth[k] = np.zeros((0, 68, 2))
    predictor = FakePredictor(truth, ghost=True)
    tracker, results = _follow(predictor, frames_of(truth), TrackerSettings(smoothing=None))
    assert predictor.detector_frames == [0, *range(12, 30)] and tracker.losses == 1
    assert all(len(r) == 0 for r in results[12:])

    blind = FakePredictor(truth, ghost=True)  # the look check off: the ghost stays
    tracker, results = _follow(blind, frames_of(truth), TrackerSettings(min_likeness=-1.0))
    assert blind.detector_frames == [0] and tracker.losses == 0 and len(results[20]) == 1


def test_a_face_moving_out_of_its_crop_is_found_again_in_the_same_frame():
    truth = [t[None] for t in clip_face(30)]
    for k in range(15, 30):
        truth[k] = truth[k] + np.array([80.0, 0.0])  # a jump the crop cannot follow
    predictor = FakePredictor(truth)
    tracker, results = _follow(predictor, frames_of(truth), TrackerSettings(smoothing=None))
    assert predictor.detector_frames == [0, 15]
    assert tracker.losses == 1 and all(len(r) == 1 for r in results)
    assert np.abs(results[15][0].points - truth[15][0]).max() < 2.0


def test_two_faces_keep_their_numbers_through_detections_that_list_them_in_another_order():
    left = clip_face(40, speed=0.5)
    right = clip_face(40, speed=0.5, turn_deg=-15, grow=(0.7, 1.5), shift=(150.0, 0.0))
    size = np.ptp(right, axis=1).max(axis=1) - np.ptp(left, axis=1).max(axis=1)
    assert size[0] < 0 < size[-1], "the detector's largest-first order flips during the clip"
    truth = [np.stack([a, b]) for a, b in zip(left, right, strict=True)]
    predictor = FakePredictor(truth)
    _, results = _follow(
        predictor, frames_of(truth), TrackerSettings(detect_every=10, smoothing=None)
    )

    assert predictor.detector_frames == [0, 10, 20, 30]
    number_of_left = 0  # the larger face at frame 0 comes first
    for result, (true_left, true_right) in zip(results, truth, strict=True):
        by_number = {r.face: r.points for r in result}
        assert sorted(by_number) == [0, 1]
        assert np.abs(by_number[number_of_left] - true_left).max() < 3.0
        assert np.abs(by_number[1 - number_of_left] - true_right).max() < 3.0


def test_settings_out_of_range_are_named():
    with pytest.raises(ValueError, match="detect_every must be >= 1"):
        TrackerSettings(detect_every=0).check()
    with pytest.raises(ValueError, match="max_shape_residual must be > 0"):
        TrackerSettings(max_shape_residual=0).check()
