"""What travels on the wire between a policy server and a robot: field names, metadata, validation.

Protocol ``robolearn-openpi/1``, a superset of openpi's: every frame is a :mod:`robolearn.deploy.wire`
(msgpack + numpy) map.

**Metadata** (the server's first frame on every connection)::

    {"protocol": "robolearn-openpi/1", "policy_type": "flow", "site": "franka-sim",
     "features": {"observation/state": {"shape": [22], "dtype": "float32"},
                  "observation/image": {"shape": [96, 96, 3], "dtype": "uint8"}},   # per frame
     "n_obs_steps": 2, "action_horizon": 15, "action_dim": 8, "n_action_steps": 8,
     "fps": 20.0, "supports_rtc": True, "prompt_key": "prompt"}

``features`` are the wire keys (after the site's key map) the server needs, with the shape and dtype
of ONE frame; images are uint8 (H, W, 3) as openpi sends them. ``action_horizon`` is H, the length
of every reply's ``actions``; ``actions[0]`` is the action for the time the observation was taken
(the policy's past-window steps are cut off). ``n_action_steps`` is what the policy was trained to
execute per chunk. ``fps`` is None when unknown.

**The observation window.** A feature is sent either as one frame (shape ``shape``) or, for a policy
with ``n_obs_steps`` To > 1, as the window of the last To frames stacked on a leading axis, oldest
first (shape ``[To, *shape]``). One frame stands for a window of To copies of it (what a policy
does at the start of an episode), so plain openpi clients work with any policy; send the window to
give the policy its real history. Every feature in one request must use the same form.

**Request** (an openpi observation plus optional fields; a plain openpi client sends none of them):

- each feature of ``features``: an ndarray. Vectors accept any real float or int dtype (cast to
  float32) and must be finite; images must be uint8.
- ``prompt`` (the wire key mapped to ``task``; str): the instruction, passed on as ``task``.
- ``seq`` (int) and ``obs_timestamp`` (float, robot monotonic seconds): echoed in the reply.
- ``inference_delay`` (int d, 0 <= d <= H): control steps that execute before the new chunk can start.
- ``prev_actions`` (ndarray (n, action_dim), n <= H): the left-over of the previous chunk from the
  observation's time on (what executes next if nothing changes); ``prev_actions[j]`` aligns with
  ``actions[j]``.
- ``rtc`` (bool): ask for real-time-chunking guided sampling (flow policies; needs the two fields above).

Keys the site map names but this policy does not use (a camera it ignores) are accepted and
ignored, so one robot client serves policies with different inputs; any other key is an error.

**Reply**: ``{"actions": float32 (H, action_dim), "server_timing": {name: float}, "seq": int,
"obs_timestamp": float}`` (the last two only when sent). Every ndarray has H as its first axis, so
openpi's ``ActionChunkBroker`` can slice the reply step by step. **An error reply** is a plain string
(a text frame; openpi's client raises on it) naming the key and what was expected; the connection
stays open.

Only numpy (and :mod:`robolearn.types`) is imported here: the robot side uses this module with
nothing but numpy, msgpack and websockets installed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from robolearn.types import TASK, is_image_key

if TYPE_CHECKING:  # keymap reads YAML site configs; the robot side may use this module without PyYAML
    from robolearn.deploy.keymap import KeyMap

__all__ = [
    "ACTIONS",
    "INFERENCE_DELAY",
    "OBS_TIMESTAMP",
    "OPTIONAL_FIELDS",
    "PREV_ACTIONS",
    "PROTOCOL",
    "ProtocolError",
    "RTC",
    "Request",
    "SEQ",
    "SERVER_TIMING",
    "ServerSpec",
    "WireFeature",
    "make_reply",
    "parse_request",
]

PROTOCOL = "robolearn-openpi/1"
SEQ = "seq"
OBS_TIMESTAMP = "obs_timestamp"
INFERENCE_DELAY = "inference_delay"
PREV_ACTIONS = "prev_actions"
RTC = "rtc"
OPTIONAL_FIELDS = (SEQ, OBS_TIMESTAMP, INFERENCE_DELAY, PREV_ACTIONS, RTC)
"""Optional request fields, besides the prompt."""
ACTIONS = "actions"
SERVER_TIMING = "server_timing"
MAX_PROMPT_CHARS = 4096


class ProtocolError(ValueError):
    """A request that does not match what the server declared; the message names the key."""


@dataclass(frozen=True)
class WireFeature:
    """One observation feature as it travels: wire key, policy feature, per-frame wire shape, dtype."""

    key: str
    feature: str
    shape: tuple[int, ...]
    dtype: str
    """``uint8`` for images, ``float32`` for vectors."""

    @property
    def is_image(self) -> bool:
        return self.dtype == "uint8"


@dataclass(frozen=True)
class ServerSpec:
    """Everything a server declares in its metadata frame, and what requests are checked against."""

    features: tuple[WireFeature, ...]
    n_obs_steps: int
    action_horizon: int
    action_dim: int
    n_action_steps: int
    policy_type: str
    supports_rtc: bool
    fps: float | None = None
    site: str = ""
    prompt_key: str | None = None
    ignored_keys: frozenset[str] = field(default_factory=frozenset)
    """Wire keys the site names that this policy does not use (accepted and dropped)."""

    @classmethod
    def for_policy(
        cls,
        input_features: Mapping[str, tuple[int, ...]],
        keymap: KeyMap,
        *,
        n_obs_steps: int,
        horizon: int,
        exec_start: int,
        action_dim: int,
        n_action_steps: int,
        policy_type: str,
        supports_rtc: bool,
        fps: float | None = None,
        site: str = "",
    ) -> ServerSpec:
        """The spec of a policy: ``input_features`` are its per-frame shapes ((D,) or (C, H, W) images);
        the reply horizon is ``horizon - exec_start`` (actions from the observation's time on)."""
        features = []
        for feature, shape in input_features.items():
            shape = tuple(int(n) for n in shape)
            if is_image_key(feature):
                if len(shape) != 3:
                    raise ValueError(f"{feature}: expected an image shape (C, H, W), found {shape}")
                c, h, w = shape
                features.append(WireFeature(keymap.to_wire(feature), feature, (h, w, c), "uint8"))
            else:
                features.append(WireFeature(keymap.to_wire(feature), feature, shape, "float32"))
        used = {f.key for f in features}
        prompt_key = keymap.to_wire(TASK)
        ignored = frozenset(k for k in keymap.mapped_wire_keys() if k not in used and k != prompt_key)
        return cls(
            features=tuple(features),
            n_obs_steps=n_obs_steps,
            action_horizon=horizon - exec_start,
            action_dim=action_dim,
            n_action_steps=n_action_steps,
            policy_type=policy_type,
            supports_rtc=supports_rtc,
            fps=None if fps is None else float(fps),
            site=site,
            prompt_key=prompt_key,
            ignored_keys=ignored,
        )

    def metadata(self) -> dict[str, Any]:
        """The metadata frame (plain types only)."""
        return {
            "protocol": PROTOCOL,
            "policy_type": self.policy_type,
            "site": self.site,
            "features": {f.key: {"shape": list(f.shape), "dtype": f.dtype} for f in self.features},
            "n_obs_steps": self.n_obs_steps,
            "action_horizon": self.action_horizon,
            "action_dim": self.action_dim,
            "n_action_steps": self.n_action_steps,
            "fps": self.fps,
            "supports_rtc": self.supports_rtc,
            "prompt_key": self.prompt_key,
        }

    def max_request_bytes(self) -> int:
        """An upper bound on a valid request's payload (float64 vectors, full windows, full left-over)."""
        total = 0
        for f in self.features:
            total += self.n_obs_steps * math.prod(f.shape) * (1 if f.is_image else 8)
        return total + self.action_horizon * self.action_dim * 8 + 4 * MAX_PROMPT_CHARS + 4096


@dataclass
class Request:
    """A validated request: windows per policy feature, (To, *wire shape), and the optional fields."""

    windows: dict[str, np.ndarray]
    """Policy feature -> (To, *wire shape): uint8 (To, H, W, 3) images or float32 (To, D) vectors
    (possibly a broadcast view of one frame)."""
    prompt: str | None = None
    seq: int | None = None
    obs_timestamp: float | None = None
    inference_delay: int | None = None
    prev_actions: np.ndarray | None = None
    """float32 (n, action_dim)."""
    rtc: bool = False

    def signature(self) -> tuple:
        """Requests with equal signatures can share one policy call."""
        return (self.rtc, tuple((k, v.shape, v.dtype.str) for k, v in sorted(self.windows.items())))


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {list(x.shape)} and dtype {x.dtype.str}"
    if isinstance(x, str):
        return f"a str of {len(x)} chars"
    return f"a {type(x).__name__}"


def _window(f: WireFeature, value: Any, to: int) -> tuple[np.ndarray, bool]:
    """The (To, *shape) window of feature ``f`` and whether it came as one frame."""
    frame = list(f.shape)
    expected = f"an ndarray of shape {frame}" + (
        f" or {[to, *frame]} (a {to}-frame window)" if to > 1 else ""
    )
    if not isinstance(value, np.ndarray):
        raise ProtocolError(f"{f.key!r}: expected {expected} ({f.dtype}), found {_describe(value)}")
    if tuple(value.shape) == f.shape:
        single = True
    elif to > 1 and tuple(value.shape) == (to, *f.shape):
        single = False
    else:
        raise ProtocolError(f"{f.key!r}: expected {expected}, found shape {list(value.shape)}")
    if f.is_image:
        if value.dtype != np.uint8:
            raise ProtocolError(f"{f.key!r}: expected dtype uint8 (an image), found {value.dtype.str}")
    else:
        if value.dtype.kind not in "fiu":
            raise ProtocolError(f"{f.key!r}: expected a float or int dtype, found {value.dtype.str}")
        with np.errstate(over="ignore"):
            value = value.astype(np.float32, copy=False)
        if not np.isfinite(value).all():  # after the cast: float64 beyond float32's range is inf too
            raise ProtocolError(f"{f.key!r}: holds NaN or inf (as float32)")
    return (np.broadcast_to(value, (to, *f.shape)) if single else value), single


def _optional_fields(obj: Mapping[str, Any], spec: ServerSpec, req: Request) -> None:
    if SEQ in obj:
        if not _is_int(obj[SEQ]):
            raise ProtocolError(f"{SEQ!r}: expected an int, found {_describe(obj[SEQ])}")
        req.seq = int(obj[SEQ])
    if OBS_TIMESTAMP in obj:
        t = obj[OBS_TIMESTAMP]
        if not (_is_int(t) or isinstance(t, float | np.floating)) or not math.isfinite(float(t)):
            raise ProtocolError(f"{OBS_TIMESTAMP!r}: expected a finite float (seconds), found {t!r:.60}")
        req.obs_timestamp = float(t)
    h, da = spec.action_horizon, spec.action_dim
    if INFERENCE_DELAY in obj:
        d = obj[INFERENCE_DELAY]
        if not _is_int(d) or not 0 <= int(d) <= h:
            raise ProtocolError(f"{INFERENCE_DELAY!r}: expected an int in [0, {h}], found {d!r:.60}")
        req.inference_delay = int(d)
    if PREV_ACTIONS in obj:
        p = obj[PREV_ACTIONS]
        ok = isinstance(p, np.ndarray) and p.ndim == 2 and p.shape[0] <= h and p.shape[1] == da
        if not ok or p.dtype.kind not in "fiu":
            raise ProtocolError(
                f"{PREV_ACTIONS!r}: expected a float array of shape [n, {da}] with n <= {h}, found {_describe(p)}"
            )
        with np.errstate(over="ignore"):
            req.prev_actions = p.astype(np.float32)
        if not np.isfinite(req.prev_actions).all():
            raise ProtocolError(f"{PREV_ACTIONS!r}: holds NaN or inf (as float32)")
    if RTC in obj:
        if not isinstance(obj[RTC], bool | np.bool_):
            raise ProtocolError(f"{RTC!r}: expected a bool, found {_describe(obj[RTC])}")
        req.rtc = bool(obj[RTC])
    if req.rtc:
        if not spec.supports_rtc:
            raise ProtocolError(
                f"{RTC!r}: this server's policy ({spec.policy_type}) is not a flow policy; real-time chunking "
                "needs a flow policy's velocity field"
            )
        if req.prev_actions is None or req.inference_delay is None:
            raise ProtocolError(
                f"{RTC!r}: needs {PREV_ACTIONS!r} and {INFERENCE_DELAY!r} in the same request"
            )


def parse_request(obj: Any, spec: ServerSpec) -> Request:
    """Check one unpacked request against ``spec``; raise :class:`ProtocolError` naming the first bad key."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"request: expected a map of observation keys, found {_describe(obj)}")
    known = {f.key for f in spec.features} | set(OPTIONAL_FIELDS) | spec.ignored_keys
    if spec.prompt_key:
        known.add(spec.prompt_key)
    for key in obj:
        if key not in known:
            accepted = ", ".join(sorted(known))
            raise ProtocolError(f"{str(key)!r:.80}: unknown key (this server accepts: {accepted})")
    req = Request(windows={})
    forms = set()
    for f in spec.features:
        if f.key not in obj:
            raise ProtocolError(
                f"{f.key!r}: missing; expected an ndarray of shape {list(f.shape)} ({f.dtype})"
            )
        req.windows[f.feature], single = _window(f, obj[f.key], spec.n_obs_steps)
        forms.add(single)
    if len(forms) > 1:
        raise ProtocolError(
            f"request: mixes single frames and {spec.n_obs_steps}-frame windows; send one form"
        )
    if spec.prompt_key and spec.prompt_key in obj:
        prompt = obj[spec.prompt_key]
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            raise ProtocolError(
                f"{spec.prompt_key!r}: expected a str of at most {MAX_PROMPT_CHARS} chars, found {_describe(prompt)}"
            )
        req.prompt = prompt
    _optional_fields(obj, spec, req)
    return req


def make_reply(actions: np.ndarray, request: Request, timing: Mapping[str, float]) -> dict[str, Any]:
    """The reply to ``request``: ``actions`` (H, Da) as float32, timings as plain floats, echoes."""
    reply: dict[str, Any] = {
        ACTIONS: np.ascontiguousarray(actions, dtype=np.float32),
        SERVER_TIMING: {k: float(v) for k, v in timing.items()},
    }
    if request.seq is not None:
        reply[SEQ] = request.seq
    if request.obs_timestamp is not None:
        reply[OBS_TIMESTAMP] = request.obs_timestamp
    return reply
