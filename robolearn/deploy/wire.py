"""The openpi wire format: msgpack with openpi's numpy extension, and nothing that can run code.

Byte layout (the same as ``openpi_client.msgpack_numpy``, so openpi clients and servers interoperate):

- an ``np.ndarray`` travels as the map ``{b"__ndarray__": True, b"data": <bin, C order>,
  b"dtype": <str, e.g. "<f4">, b"shape": [<int>, ...]}``;
- an ``np.generic`` scalar travels as ``{b"__npgeneric__": True, b"data": <its .item()>, b"dtype": <str>}``;
- everything else is plain msgpack (str as str, bytes as bin, tuples become lists). ``np.float64`` and
  ``np.str_`` subclass ``float`` and ``str``, so they travel as plain values, exactly as with openpi.

Unpacking never unpickles and refuses object, void (structured) and complex dtypes, arrays whose byte
count does not match ``shape * itemsize``, unknown msgpack extension types and trailing bytes. msgpack's
timestamp extension decodes to float seconds. Every such problem is a :class:`WireError`.
Arrays that come out of :func:`unpackb` are read-only views of the received frame (no copy).

Only numpy and msgpack are imported here: the robot side uses this module without torch.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import msgpack
import numpy as np

__all__ = ["WireError", "packb", "unpackb"]

_NDARRAY = b"__ndarray__"
_NPGENERIC = b"__npgeneric__"
# Object arrays would need pickle; void (structured) and complex are refused as openpi refuses them.
_REFUSED_KINDS = {"O": "object", "V": "void (structured)", "c": "complex"}
_MAX_NDIM = 32


class WireError(ValueError):
    """A frame that cannot be packed or unpacked: the message says what was wrong."""


def _check_dtype(dtype: np.dtype, where: str) -> None:
    name = _REFUSED_KINDS.get(dtype.kind)
    if name is not None:
        raise WireError(f"{where}: {name} dtype {dtype.str!r} is not allowed on the wire")


def _encode(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy arrays and scalars to openpi's maps; anything else is an error."""
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype, "packb")
        # A contiguous array goes out through its buffer, sparing one copy of a large image.
        data = obj.data if obj.flags.c_contiguous else np.ascontiguousarray(obj).data
        return {_NDARRAY: True, b"data": data, b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype, "packb")
        return {_NPGENERIC: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise WireError(
        f"packb: cannot send a {type(obj).__name__} (only numpy arrays/scalars and msgpack types)"
    )


def packb(obj: Any) -> bytes:
    """Serialize ``obj`` (dicts, lists, str, bytes, numbers, None, numpy arrays and scalars) to one frame.

    Raises :class:`WireError` for object/void/complex dtypes and for types msgpack cannot carry.
    """
    try:
        return msgpack.packb(obj, default=_encode, use_bin_type=True)
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"packb: {exc}") from exc


def _parse_dtype(value: Any, where: str) -> np.dtype:
    if not isinstance(value, str | bytes):
        raise WireError(f"{where}: dtype must be a string like '<f4', got {type(value).__name__}")
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # deprecated aliases ('a') are refused, not just warned about
            dtype = np.dtype(text)
    except (TypeError, ValueError, SyntaxError, Warning) as exc:
        raise WireError(f"{where}: unknown dtype {text!r}") from exc
    _check_dtype(dtype, where)
    return dtype


def _decode_ndarray(obj: dict) -> np.ndarray:
    where = "ndarray"
    data = obj.get(b"data")
    shape = obj.get(b"shape")
    if not isinstance(data, bytes):
        raise WireError(f"{where}: 'data' must be bytes, got {type(data).__name__}")
    dtype = _parse_dtype(obj.get(b"dtype"), where)
    if dtype.itemsize == 0:
        raise WireError(f"{where}: dtype {dtype.str!r} has no size")
    if not isinstance(shape, list | tuple) or len(shape) > _MAX_NDIM:
        raise WireError(f"{where}: 'shape' must be a list of at most {_MAX_NDIM} ints, got {shape!r:.80}")
    if not all(type(n) is int and n >= 0 for n in shape):
        raise WireError(f"{where}: 'shape' must hold non-negative ints, got {shape!r:.80}")
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data):
        raise WireError(
            f"{where}: shape {list(shape)} of {dtype.str} needs {expected} bytes, the frame holds {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _decode_npgeneric(obj: dict) -> np.generic:
    where = "npgeneric"
    dtype = _parse_dtype(obj.get(b"dtype"), where)
    data = obj.get(b"data")
    if isinstance(data, bool | int | float | str | bytes):
        try:
            with np.errstate(over="ignore"):  # a float beyond the dtype's range becomes inf, as numpy does
                return dtype.type(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise WireError(f"{where}: {data!r:.40} is not a valid {dtype.str} value") from exc
    raise WireError(f"{where}: 'data' must be a number, str or bytes, got {type(data).__name__}")


def _object_hook(obj: dict) -> Any:
    if _NDARRAY in obj:
        return _decode_ndarray(obj)
    if _NPGENERIC in obj:
        return _decode_npgeneric(obj)
    return obj


def _ext_hook(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not part of the protocol")


def _with_path(data: bytes | bytearray | memoryview, message: str) -> str:
    """``message`` prefixed with where in the frame the bad numpy map sits (``'observation/state'``),
    found by a second, hook-free parse; only error replies pay for it."""
    try:
        root = msgpack.unpackb(data, ext_hook=lambda code, raw: None, raw=False, timestamp=1)
    except Exception:  # noqa: BLE001  (the first parse failed for the same reason)
        return message
    stack: list[tuple[str, Any]] = [("", root)]
    while stack:  # iterative: nesting may be deeper than Python's recursion limit
        path, node = stack.pop()
        if isinstance(node, dict):
            if _NDARRAY in node or _NPGENERIC in node:
                try:
                    _object_hook(node)
                except WireError as exc:
                    return f"{path}: {exc}" if path else str(exc)
                continue
            children = [(f"{path}[{k!r}]" if path else repr(k), v) for k, v in node.items()]
        elif isinstance(node, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(children))
    return message


def unpackb(data: bytes | bytearray | memoryview) -> Any:
    """Deserialize one frame made by :func:`packb` (or by openpi's ``msgpack_numpy``).

    Raises :class:`WireError` on anything malformed: truncated or trailing bytes, text instead of a
    binary frame, refused dtypes, size mismatches, unknown extensions, too deep nesting.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"expected a binary msgpack frame, got {type(data).__name__}")
    try:
        return msgpack.unpackb(
            data, object_hook=_object_hook, ext_hook=_ext_hook, raw=False, timestamp=1, strict_map_key=True
        )
    except WireError as exc:
        raise WireError(_with_path(data, str(exc))) from None
    except Exception as exc:  # msgpack raises many types (ExtraData, StackError, UnicodeDecodeError, ...)
        raise WireError(f"malformed msgpack frame: {type(exc).__name__}: {exc}"[:300]) from exc
