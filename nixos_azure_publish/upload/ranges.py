"""Byte-range algebra on spans (``[start, end)``, :data:`~nixos_azure_publish.vhd.scan.Span`):
merge, clip, subtract, split."""

from __future__ import annotations

import bisect
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from nixos_azure_publish.vhd.scan import Span

log = logging.getLogger(__name__)


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sorted, with overlapping and adjacent spans joined; empty spans dropped."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def clip_spans(spans: Sequence[Span], start: int, end: int) -> list[Span]:
    """The parts of the sorted, disjoint *spans* inside ``[start, end)``."""
    first = bisect.bisect_right(spans, (start, start)) - 1
    first = max(first, 0)
    clipped: list[Span] = []
    for s, e in spans[first:]:
        if s >= end:
            break
        lo, hi = max(s, start), min(e, end)
        if hi > lo:
            clipped.append((lo, hi))
    return clipped


def subtract_spans(spans: Sequence[Span], remove: Sequence[Span]) -> list[Span]:
    """*spans* minus *remove*; both sorted and disjoint."""
    result: list[Span] = []
    for start, end in spans:
        cursor = start
        for r_start, r_end in clip_spans(remove, start, end):
            if r_start > cursor:
                result.append((cursor, r_start))
            cursor = max(cursor, r_end)
        if cursor < end:
            result.append((cursor, end))
    return result


def split_span(span: Span, limit: int) -> list[Span]:
    """*span* cut into pieces of at most *limit* bytes."""
    start, end = span
    return [(pos, min(pos + limit, end)) for pos in range(start, end, limit)]


def span_text(span: Span) -> str:
    return f"bytes {span[0]}-{span[1] - 1}"
