"""Confusion matrices in result records, stored sparse so that a record stays small at any class count.

A test confusion matrix (true class × predicted class, image counts) has C² cells but at most one non-zero cell per
test image: at 1,000 classes the dense lists made a result JSON 38 MB, the sparse form below is bounded by the test
set (10,000 images: ≤ 10,000 entries). Result JSONs (`engine.summarize`) and the runs tables hold

    {"classes": C, "counts": [[true, predicted, count], ...]}    non-zero cells only, row-major order

and every reader goes through `decode`, which also reads the dense lists of records written before (C lists of C
counts). No torch or numpy import: the aggregation reads these.
"""

from __future__ import annotations

import json


def encode(matrix) -> dict:
    """The sparse record of a dense (C, C) matrix of counts (list of lists, or anything with `.tolist()`)."""
    rows = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    counts = [[t, p, int(n)] for t, row in enumerate(rows) for p, n in enumerate(row) if n]
    return {"classes": len(rows), "counts": counts}


def decode(value) -> list[list[int]]:
    """The dense (C, C) matrix (list of C lists of C ints) of a sparse record, of a dense one, or of either as JSON
    text. Raises ValueError when `value` is neither (wrong types, negative or fractional counts, a cell outside the
    matrix, a ragged dense matrix): a damaged record."""
    n, cells = _parse(value)
    dense = [[0] * n for _ in range(n)]
    for t, p, c in cells:
        dense[t][p] += c
    return dense


def check(value) -> int:
    """The class count of a confusion record, after checking it as `decode` does (without building the matrix)."""
    n, cells = _parse(value)
    for _ in cells:
        pass
    return n


def _parse(value):
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, list):
        n = len(value)
        if not all(isinstance(r, list) and len(r) == n for r in value):
            raise ValueError(f"a dense confusion matrix must be {n} lists of {n} counts")
        return n, ((t, p, _count(c)) for t, r in enumerate(value) for p, c in enumerate(r))
    if not isinstance(value, dict) or set(value) != {"classes", "counts"}:
        raise ValueError("a confusion record must be {classes, counts} or a list of rows")
    n = value["classes"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or not isinstance(value["counts"], list):
        raise ValueError(f"confusion 'classes' must be a whole number ≥ 0 and 'counts' a list, got {n!r}")

    def cells():
        for entry in value["counts"]:
            if not (isinstance(entry, list) and len(entry) == 3):
                raise ValueError(f"a confusion entry must be [true, predicted, count], got {entry!r}")
            t, p, c = entry
            if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in (t, p)):
                raise ValueError(f"confusion entry {entry!r} lies outside a {n} × {n} matrix")
            yield t, p, _count(c)

    return n, cells()


def _count(c) -> int:
    if isinstance(c, bool) or not isinstance(c, int) or c < 0:
        raise ValueError(f"a confusion count must be a whole number ≥ 0, got {c!r}")
    return c
