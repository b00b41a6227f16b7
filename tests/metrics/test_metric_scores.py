"""MetricResult and the bootstrap interval: coverage of a known mean, seeding, NaN, JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from netlens.metrics import MetricResult, bootstrap_interval


def test_interval_matches_the_normal_interval_of_a_large_sample():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, size=400)
    low, high = bootstrap_interval(values)
    half = 1.96 * values.std() / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.15 * half)


def test_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        values = rng.exponential(1.0, size=60)
        low, high = bootstrap_interval(values, resamples=500, seed=trial)
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_seeded_nan_skipped_and_undefined_for_one_value():
    values = [0.3, 0.1, float("nan"), 0.5, 0.2]
    assert bootstrap_interval(values, seed=4) == bootstrap_interval(values, seed=4)
    many = np.random.default_rng(2).random(50)
    assert bootstrap_interval(many, seed=4) != bootstrap_interval(many, seed=5)
    assert bootstrap_interval(values) == bootstrap_interval([0.3, 0.1, 0.5, 0.2])
    assert all(math.isnan(v) for v in bootstrap_interval([1.0, float("nan")]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(values, confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval(values, resamples=0)


def test_result_counts_undefined_values_and_goes_to_json():
    result = MetricResult.of(
        "deletion", [0.2, float("nan"), 0.4], higher_is_better=False, x=[0, 1], curves=[[1, 0]] * 3
    )
    assert result.undefined == 1 and result.mean == pytest.approx(0.3)
    found = json.loads(json.dumps(result.to_dict()))
    assert found["n"] == 2 and found["mean_curve"] == [1.0, 0.0] and found["x"] == [0.0, 1.0]
    assert "values" not in result.to_dict(values=False)
    better = MetricResult.of("deletion", [0.01, 0.02, 0.015], higher_is_better=False)
    worse = MetricResult.of("deletion", [0.5, 0.6, 0.55], higher_is_better=False)
    assert better.beats(worse) and not worse.beats(better)
    with pytest.raises(ValueError, match="cannot compare"):
        better.beats(MetricResult.of("insertion", [0.5, 0.6], higher_is_better=True))
