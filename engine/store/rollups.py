"""The rollup maths: min/max blocks of a series' steps, kept at write time for downsampled reads.

Pure functions on blocks in memory (no SQL): ``RunStore`` feeds them rows and writes what they
return, and ``RunReader.query`` uses ``_cover`` to cut a range into stored blocks.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

# Rollup levels: block sizes 16, 32, 64, ..., 32768 steps (level i holds blocks of 1 << shift[i]).
# Why these:
# - Ratio 2 between levels. A query picks the coarsest level whose blocks are no wider than a
#   bucket, so a bucket holds at most 2 rollup rows (ratio 4 would mean up to 4, and measured here
#   fetching a row into Python costs ~0.6 us and a GROUP BY sort ~0.4 us per row, so rows read is
#   the cost). The price is more levels to maintain (12), but rows are written once, when their
#   block closes (see ``RunStore._advance``): ~2 rows per 16 steps per series, all levels together.
# - Smallest 16: ranges with fewer than 16 steps per bucket are downsampled from the raw rows,
#   which costs ~0.2 us per row, so that fallback never reads more than 16 x buckets rows.
# - Largest 32768: keeps buckets at <= 2 rows up to 32768 x buckets steps (16M steps at
#   max_points=1000); longer series still read only 1/32768 of their rows per bucket.
# Rollup storage is ~1/8 of a row per stored point (~10 B/point against ~41 B for the raw row).
_ROLLUP_SHIFTS: tuple[int, ...] = tuple(range(4, 16))

ROLLUP_BLOCK_SIZES: tuple[int, ...] = tuple(1 << s for s in _ROLLUP_SHIFTS)
"""Block sizes (steps) of the rollup levels, finest first; level ``i`` has ``ROLLUP_BLOCK_SIZES[i]``.
Block ``b`` of a level covers steps ``[b * size, (b + 1) * size - 1]``."""

_INF = float("inf")

# A rollup block in memory: [block, n, first_step, last_step, min_step, min_value, min_wall,
# max_step, max_value, max_wall], the rollup row without (series_id, level). Values: None = NaN.
_Block = list


def _aggregate(points: Iterable[Sequence[Any]], shift: int) -> list[_Block] | None:
    """Blocks of ``1 << shift`` steps from ``(step, value, wall, ...)`` points in step order.

    Returns None when the steps are not strictly increasing (the caller then rebuilds from the
    stored rows, where INSERT OR REPLACE has already settled which value a repeated step keeps).
    """
    out: list[_Block] = []
    blk: _Block = [None]
    last = -_INF
    for step, v, wall, *_ in points:
        if step <= last:
            return None
        last = step
        b = step >> shift
        if b != blk[0]:
            if v is None:
                blk = [b, 1, step, step, None, None, None, step, None, wall]
            else:
                blk = [b, 1, step, step, step, v, wall, step, v, wall]
            out.append(blk)
            continue
        blk[1] += 1
        blk[3] = step
        if v is None:  # NaN: ranks as +inf on the max side, the earliest of a tie stays
            mx = blk[8]
            if mx is not None and mx < _INF:
                blk[7], blk[8], blk[9] = step, None, wall
        else:
            mn = blk[5]
            if mn is None or v < mn:
                blk[4], blk[5], blk[6] = step, v, wall
            mx = blk[8]
            if mx is not None and v > mx:
                blk[7], blk[8], blk[9] = step, v, wall
    return out


def _aggregate_batch(
    rows: Sequence[tuple[int, int, float, float, float]], shift: int
) -> list[_Block] | None:
    """``_aggregate`` for one series' ``(series_id, step, epoch, wall, value)`` rows of a flush,
    about 4x faster: min()/max()/index() per block run in C instead of a Python loop per point.
    Returns None when the steps are not strictly increasing."""
    steps = [r[1] for r in rows]
    if len(set(steps)) != len(steps) or steps != sorted(steps):
        return None
    values = [r[4] for r in rows]
    out: list[_Block] = []
    i, n = 0, len(steps)
    while i < n:
        b = steps[i] >> shift
        j = bisect.bisect_left(steps, (b + 1) << shift, i)
        seg = values[i:j]
        total = sum(seg)
        if total != total:  # a NaN (or +inf and -inf): NaN ranks apart, take the slow loop
            pts = [(s, None if v != v else v, w) for _, s, _, w, v in rows[i:j]]
            out += _aggregate(pts, shift) or []
        else:
            # min()/max() return the first of equal items and index() finds the first equal
            # one: the earliest step wins a tie, as everywhere else.
            lo, hi = min(seg), max(seg)
            k, m = i + seg.index(lo), i + seg.index(hi)
            # fmt: off
            out.append([b, j - i, steps[i], steps[j - 1],
                        steps[k], lo, rows[k][3], steps[m], hi, rows[m][3]])
            # fmt: on
        i = j
    return out


def _merge_into(p: _Block, c: Sequence[Any]) -> None:
    """Fold block ``c``, whose steps all come after ``p``'s, into ``p`` (ties keep ``p``'s)."""
    p[1] += c[1]
    p[3] = c[3]
    mn = c[5]
    if mn is not None and (p[5] is None or mn < p[5]):
        p[4:7] = c[4:7]
    mx, pmx = c[8], p[8]
    if pmx is not None and (pmx < _INF if mx is None else mx > pmx):
        p[7:10] = c[7:10]


def _combine(children: Iterable[Sequence[Any]], d: int) -> list[_Block]:
    """Parent blocks (``2**d`` children each) from child blocks in block order."""
    out: list[_Block] = []
    p: _Block = [None]
    for c in children:
        b = c[0] >> d
        if b != p[0]:
            p = [b, *c[1:]]
            out.append(p)
        else:
            _merge_into(p, c)
    return out


def _runs(blocks: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive integers in a sorted sequence."""
    i = 0
    while i < len(blocks):
        j = i
        while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1:
            j += 1
        yield blocks[i], blocks[j]
        i = j + 1


def _cover(lo: int, hi: int, top: int) -> list[tuple[int, int, int]]:
    """Cut steps ``[lo, hi]`` into aligned rollup blocks no coarser than level ``top``.

    Returns ``(level, first_block, last_block)`` runs in step order; level -1 means raw steps
    ``first..last`` (fewer than the smallest block, at the two ends only). Each piece is the
    largest aligned block that fits, so the ends cost at most one block per level, which is what
    makes a window's edges exact at a cost independent of its length.
    """
    out: list[tuple[int, int, int]] = []
    s = lo
    while s <= hi:
        for lv in range(top, -1, -1):
            shift = _ROLLUP_SHIFTS[lv]
            if s & ((1 << shift) - 1) == 0 and s + (1 << shift) - 1 <= hi:
                first = s >> shift
                count = (hi + 1 - s) >> shift if lv == top else 1
                out.append((lv, first, first + count - 1))
                s += count << shift
                break
        else:
            end = min(hi, s | ((1 << _ROLLUP_SHIFTS[0]) - 1))
            out.append((-1, s, end))
            s = end + 1
    return out
