"""Server-side downsampling of a curve for the browser: Largest-Triangle-Three-Buckets.

LTTB keeps the first and last points and, from each of ``n - 2`` equal buckets, the point that
makes the largest triangle with its neighbours' choices: spikes and the curve's shape survive,
at most ``n`` points go over the wire however long the run is. It returns indices, so the
smoothed curve can be cut at the same x values as the raw one (uPlot wants one x per chart).
"""

from __future__ import annotations

from collections.abc import Sequence

#: What a series request gets when it names no max_points, and the most it may ask for.
DEFAULT_MAX_POINTS = 2_000
LIMIT_MAX_POINTS = 10_000


def lttb_indices(xs: Sequence[float], ys: Sequence[float], n: int) -> list[int]:
    """Indices (ascending) of at most ``n`` points of the curve (xs ascending) to draw."""
    length = len(xs)
    if n >= length or length <= 2:
        return list(range(length))
    if n <= 2:
        return [0, length - 1][: max(n, 1)]
    chosen = [0]
    bucket = (length - 2) / (n - 2)
    a = 0
    for i in range(n - 2):
        start = int(i * bucket) + 1
        end = int((i + 1) * bucket) + 1
        # The next bucket's mean is the third corner of the triangle.
        next_start, next_end = end, min(int((i + 2) * bucket) + 1, length)
        span = next_end - next_start
        mean_x = sum(xs[next_start:next_end]) / span if span else xs[-1]
        mean_y = sum(ys[next_start:next_end]) / span if span else ys[-1]
        ax, ay = xs[a], ys[a]
        best, best_area = start, -1.0
        for j in range(start, end):
            area = abs((ax - mean_x) * (ys[j] - ay) - (ax - xs[j]) * (mean_y - ay))
            if area > best_area:
                best, best_area = j, area
        chosen.append(best)
        a = best
    chosen.append(length - 1)
    return chosen


__all__ = ["DEFAULT_MAX_POINTS", "LIMIT_MAX_POINTS", "lttb_indices"]
