"""Feature descriptions (key -> per-frame shape) and the checks run before any work starts (light)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE, is_image_key


class FeatureMismatchError(ValueError):
    """A dataset, env or batch feature is missing or has another shape than the policy expects."""


def feature_shape(key: str, spec: Any) -> tuple[int, ...]:
    """Per-frame shape of one feature as the policy sees it; images come out channel-first (C, H, W).

    ``spec`` is a :class:`robolearn.types.FeatureSpec`, anything with ``.shape`` (a gymnasium ``Box``,
    an array) or a sequence of ints. Image shapes given channel-last (H, W, C) — as datasets and envs
    store them — are transposed.
    """
    shape = tuple(int(s) for s in getattr(spec, "shape", spec))
    if is_image_key(key) and len(shape) == 3:
        dtype = getattr(spec, "dtype", None)
        channel_last = dtype in ("image", "video") or (shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4))
        if channel_last:
            shape = (shape[2], shape[0], shape[1])
    return shape


def select_input_features(
    features: Mapping[str, Any], obs_keys: Iterable[str] = ()
) -> dict[str, tuple[int, ...]]:
    """The observation features a policy consumes, as ``{key: per-frame shape}``.

    With ``obs_keys`` empty: every state, environment-state and image feature found in ``features``.
    """
    obs_keys = tuple(obs_keys)
    if obs_keys:
        missing = [k for k in obs_keys if k not in features]
        if missing:
            raise FeatureMismatchError(
                f"feature {missing[0]!r}: listed in obs_keys but missing from the dataset "
                f"(found: {', '.join(sorted(features))})"
            )
        keys = list(obs_keys)
    else:
        keys = [k for k in features if k in (OBS_STATE, OBS_ENV_STATE) or is_image_key(k)]
    out = {k: feature_shape(k, features[k]) for k in sorted(keys)}
    for key, shape in out.items():
        if is_image_key(key) and len(shape) != 3:
            raise FeatureMismatchError(f"feature {key!r}: expected an image shape (C, H, W), found {shape}")
        if not is_image_key(key) and len(shape) != 1:
            raise FeatureMismatchError(f"feature {key!r}: expected a vector shape (D,), found {shape}")
    if not out:
        raise FeatureMismatchError(
            f"no observation features to use (found: {', '.join(sorted(features)) or 'none'})"
        )
    return out


def action_dim_of(features: Mapping[str, Any]) -> int:
    """Da from the ``action`` feature."""
    if ACTION not in features:
        raise FeatureMismatchError(f"feature {ACTION!r}: missing (found: {', '.join(sorted(features))})")
    shape = feature_shape(ACTION, features[ACTION])
    if len(shape) != 1:
        raise FeatureMismatchError(f"feature {ACTION!r}: expected shape (Da,), found {shape}")
    return shape[0]


def check_features(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, Any], source: str = "dataset"
) -> None:
    """Raise :class:`FeatureMismatchError` listing every expected feature that ``found`` lacks or
    shapes differently (extra features are fine)."""
    problems = []
    for key, shape in expected.items():
        if key not in found:
            problems.append(f"{source} feature {key!r}: expected shape {tuple(shape)}, found missing")
            continue
        got = feature_shape(key, found[key])
        if tuple(got) != tuple(shape):
            problems.append(f"{source} feature {key!r}: expected shape {tuple(shape)}, found {tuple(got)}")
    if problems:
        raise FeatureMismatchError("; ".join(problems))
