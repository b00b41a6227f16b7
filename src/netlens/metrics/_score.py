"""What every metric returns: per-sample values, their mean, and a seeded bootstrap interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MetricResult", "bootstrap_interval"]

#: Resamples of the bootstrap behind every interval.
RESAMPLES = 2000


def bootstrap_interval(
    values: object,
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    Draws ``resamples`` samples of the same size with replacement (NumPy's
    generator seeded with ``seed``, so the interval is the same on every run),
    takes the mean of each, and returns the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of those means (Efron and Tibshirani,
    *An Introduction to the Bootstrap*, 1993, ch. 13). Values that are NaN are
    left out. Fewer than two values have no spread to resample: the interval
    is ``(nan, nan)``, never a plausible-looking ``(mean, mean)``.

    Examples
    --------
    >>> low, high = bootstrap_interval([0.1, 0.4, 0.35, 0.2, 0.3])
    >>> bool(low < 0.27 < high), bootstrap_interval([1.0, 2.0]) == bootstrap_interval([1.0, 2.0])
    (True, True)
    >>> bootstrap_interval([0.5])
    (nan, nan)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive int, not {resamples!r}")
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    array = array[~np.isnan(array)]
    if len(array) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    # In chunks, so that a large sample never needs resamples x N indices at once.
    chunk = max(1, 2**22 // len(array))
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        picks = rng.integers(0, len(array), size=(stop - start, len(array)))
        means[start:stop] = array[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


@dataclass(frozen=True)
class MetricResult:
    """One metric over a batch: a value per sample, the mean, and a 95% interval.

    Attributes
    ----------
    name
        The metric (``"deletion"``, ``"insertion"``, ``"average_drop"``, ...).
    values
        One value per sample, ``(N,)`` float64; NaN where the metric is
        undefined for that sample (counted in :attr:`undefined`).
    mean
        The mean of the defined values.
    interval
        The seeded percentile bootstrap 95% interval of the mean
        (:func:`bootstrap_interval`); ``(nan, nan)`` for fewer than two values.
    higher_is_better
        Whether a larger value means a more faithful map.
    x
        For a metric that follows a curve: the points it is measured at
        (fractions of pixels removed, percentages), ``(T,)``; else ``None``.
    curves
        The per-sample curves ``(N, T)`` (class probability at each point of
        :attr:`x`); else ``None``.
    parts
        Metrics this one combines, by name (ROAD's ``"morf"`` and ``"lerf"``).
    undefined
        How many samples have no value (NaN).

    Examples
    --------
    >>> import numpy as np
    >>> result = MetricResult.of("deletion", np.array([0.2, 0.3, 0.1]), higher_is_better=False)
    >>> round(result.mean, 3), result.undefined, len(result.interval)
    (0.2, 0, 2)
    """

    name: str
    values: np.ndarray
    mean: float
    interval: tuple[float, float]
    higher_is_better: bool
    x: np.ndarray | None = None
    curves: np.ndarray | None = None
    parts: dict[str, MetricResult] = field(default_factory=dict)
    undefined: int = 0

    @classmethod
    def of(
        cls,
        name: str,
        values: object,
        *,
        higher_is_better: bool,
        seed: int = 0,
        x: object = None,
        curves: object = None,
        parts: dict[str, MetricResult] | None = None,
    ) -> MetricResult:
        """The result for per-sample ``values``: their mean and seeded bootstrap interval."""
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        defined = array[~np.isnan(array)]
        return cls(
            name=name,
            values=array,
            mean=float(defined.mean()) if len(defined) else math.nan,
            interval=bootstrap_interval(defined, seed=seed),
            higher_is_better=higher_is_better,
            x=None if x is None else np.asarray(x, dtype=np.float64),
            curves=None if curves is None else np.asarray(curves, dtype=np.float64),
            parts=dict(parts or {}),
            undefined=int(len(array) - len(defined)),
        )

    def __repr__(self) -> str:
        low, high = self.interval
        return (
            f"MetricResult({self.name}: mean {self.mean:.4g}, 95% interval "
            f"[{low:.4g}, {high:.4g}], n={len(self.values) - self.undefined})"
        )

    def beats(self, other: MetricResult) -> bool:
        """Whether this result is better than ``other`` with intervals that do not overlap.

        Examples
        --------
        >>> a = MetricResult.of("deletion", [0.1, 0.12, 0.11], higher_is_better=False)
        >>> b = MetricResult.of("deletion", [0.5, 0.52, 0.49], higher_is_better=False)
        >>> a.beats(b), b.beats(a)
        (True, False)
        """
        if self.name != other.name:
            raise ValueError(f"cannot compare {self.name} with {other.name}")
        if self.higher_is_better:
            return self.interval[0] > other.interval[1]
        return self.interval[1] < other.interval[0]

    def to_dict(self, *, values: bool = True) -> dict[str, object]:
        """The result as JSON-ready built-in types (NaN stays ``float('nan')``)."""
        found: dict[str, object] = {
            "name": self.name,
            "mean": self.mean,
            "interval": list(self.interval),
            "higher_is_better": self.higher_is_better,
            "n": int(len(self.values) - self.undefined),
            "undefined": self.undefined,
        }
        if values:
            found["values"] = self.values.tolist()
        if self.x is not None and self.curves is not None:
            found["x"] = self.x.tolist()
            found["mean_curve"] = np.nanmean(self.curves, axis=0).tolist()
        if self.parts:
            found["parts"] = {k: v.to_dict(values=values) for k, v in self.parts.items()}
        return found
