"""``assert_same``: two env backends returned the same data (shared by the Ray and process-pool tests)."""

from __future__ import annotations

import numpy as np


def assert_same(a, b, path: str = "") -> None:
    """Nested dicts / tuples / (object) arrays hold equal values of the same dtypes."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (tuple, list)) or (isinstance(a, np.ndarray) and a.dtype == object):
        assert len(a) == len(b), path
        for x, y in zip(a, b, strict=True):
            assert_same(x, y, path)
    else:
        assert type(a) is type(b) or np.asarray(a).dtype == np.asarray(b).dtype, (path, type(a), type(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
