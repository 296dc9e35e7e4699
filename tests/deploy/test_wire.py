"""The openpi msgpack-numpy wire: round trips, the exact byte layout, and refusal of bad frames."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from robolearn.deploy.wire import WireError, packb, unpackb

DTYPES = ["|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<i8", "<u8", "<f2", "<f4", "<f8", ">f4", ">i8"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3), (1, 2, 3, 4)])
def test_ndarray_round_trip_keeps_dtype_shape_values(dtype, shape):
    rng = np.random.default_rng(0)
    a = np.asarray(rng.random(shape) * 100).astype(np.dtype(dtype))
    b = unpackb(packb(a))
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype and b.dtype.str == np.dtype(dtype).str
    assert b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_non_contiguous_and_string_arrays_round_trip():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(unpackb(packb(a)), a)
    s = np.array(["pick", "lift the cube"])
    assert list(unpackb(packb(s))) == ["pick", "lift the cube"]
    f = np.arange(6, dtype=np.float64).reshape(2, 3, order="F")
    np.testing.assert_array_equal(unpackb(packb(f)), f)


@pytest.mark.parametrize(
    "scalar", [np.float32(1.5), np.int64(-7), np.uint8(255), np.bool_(True), np.int8(-3), np.float16(0.5)]
)
def test_numpy_scalars_round_trip_as_numpy_scalars(scalar):
    back = unpackb(packb(scalar))
    assert isinstance(back, np.generic)
    assert back.dtype == scalar.dtype and back == scalar


def test_float64_and_str_scalars_travel_as_plain_msgpack():
    """np.float64 and np.str_ subclass float and str, so msgpack (and openpi) send them as plain values."""
    assert unpackb(packb(np.float64(-2.25))) == -2.25
    assert type(unpackb(packb(np.float64(-2.25)))) is float
    assert unpackb(packb(np.str_("lift"))) == "lift"


def test_nested_dicts_and_plain_types_round_trip():
    obs = {
        "observation/state": np.ones(9, np.float32),
        "prompt": "lift the cube",
        "meta": {"seq": 3, "t": 1.25, "ok": True, "none": None, "raw": b"\x00\x01", "list": [1, [2, 3]]},
        "nested": {"deeper": {"img": np.zeros((4, 4, 3), np.uint8)}},
    }
    back = unpackb(packb(obs))
    assert back["prompt"] == "lift the cube"
    assert back["meta"] == {
        "seq": 3,
        "t": 1.25,
        "ok": True,
        "none": None,
        "raw": b"\x00\x01",
        "list": [1, [2, 3]],
    }
    np.testing.assert_array_equal(back["observation/state"], obs["observation/state"])
    assert back["nested"]["deeper"]["img"].shape == (4, 4, 3)
    assert packb((1, 2)) == packb([1, 2])  # tuples travel as lists, as openpi's shapes do


def test_byte_layout_is_openpis():
    """The map keys are bin (bytes), dtype is the numpy ``.str`` as a str, shape a list: openpi's layout."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = msgpack.unpackb(packb(a), raw=False)
    assert raw == {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": "<f4", b"shape": [2, 3]}
    raw = msgpack.unpackb(packb(np.float32(0.5)), raw=False)
    assert raw == {b"__npgeneric__": True, b"data": 0.5, b"dtype": "<f4"}
    # A frame built by hand in that layout (as openpi's client builds it) decodes.
    frame = msgpack.packb(
        {"x": {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": "<f4", b"shape": (2, 3)}},
        use_bin_type=True,
    )
    np.testing.assert_array_equal(unpackb(frame)["x"], a)


def test_unpacked_arrays_are_read_only_views():
    back = unpackb(packb(np.zeros(4, np.float32)))
    assert not back.flags.writeable


@pytest.mark.parametrize(
    "value",
    [
        np.array([object()], dtype=object),
        np.zeros(2, np.complex64),
        np.zeros(2, dtype="V4"),
        np.complex128(1j),
    ],
)
def test_packb_refuses_object_void_complex(value):
    with pytest.raises(WireError, match="not allowed"):
        packb(value)


def test_packb_refuses_unknown_python_objects():
    with pytest.raises(WireError, match="set"):
        packb({"x": {1, 2}})


def _array_map(data: bytes, dtype: str, shape) -> bytes:
    return msgpack.packb(
        {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}, use_bin_type=True
    )


@pytest.mark.parametrize(
    ("dtype", "match"),
    [
        ("|O", "object"),
        ("|V8", "void"),
        ("<c8", "complex"),
        ("<i4,<f4", "void"),
        ("(2,)<f4", "void"),
        ("zz9", "unknown"),
    ],
)
def test_unpackb_refuses_bad_dtypes(dtype, match):
    with pytest.raises(WireError, match=match):
        unpackb(_array_map(b"\x00" * 8, dtype, [1]))


@pytest.mark.parametrize(
    ("data", "shape", "match"),
    [
        (b"\x00" * 7, [2], "needs 8 bytes"),
        (b"\x00" * 9, [2], "needs 8 bytes"),
        (b"", [2**40, 2**40], "needs"),
        (b"\x00" * 4, [-1], "non-negative"),
        (b"\x00" * 4, [1.0], "non-negative"),
        (b"\x00" * 4, "1", "shape"),
        (b"\x00" * 4, [1] * 40, "at most"),
    ],
)
def test_unpackb_refuses_size_and_shape_mismatches(data, shape, match):
    with pytest.raises(WireError, match=match):
        unpackb(_array_map(data, "<f4", shape))


def test_unpackb_refuses_malformed_frames():
    good = packb({"observation/state": np.ones(9, np.float32), "prompt": "x"})
    for cut in (1, len(good) // 2, len(good) - 1):
        with pytest.raises(WireError, match="malformed"):
            unpackb(good[:cut])
    with pytest.raises(WireError, match="malformed"):
        unpackb(good + b"\x00")  # trailing bytes
    with pytest.raises(WireError, match="binary"):
        unpackb("a text frame")  # type: ignore[arg-type]
    with pytest.raises(WireError, match="extension"):
        unpackb(msgpack.packb(msgpack.ExtType(5, b"x")))
    with pytest.raises(WireError, match="malformed"):
        unpackb(b"\x91" * 5000)  # nesting deeper than msgpack's stack
    with pytest.raises(WireError, match="malformed"):
        unpackb(b"\xa3\xff\xfe\xfd")  # a str that is not UTF-8
    with pytest.raises(WireError, match="data"):
        unpackb(msgpack.packb({b"__ndarray__": True, b"data": "text", b"dtype": "<f4", b"shape": [1]}))
    with pytest.raises(WireError, match="valid"):
        unpackb(msgpack.packb({b"__npgeneric__": True, b"data": 1000, b"dtype": "|i1"}))


def test_errors_name_where_the_bad_array_sits():
    bad = {b"__ndarray__": True, b"data": b"1234", b"dtype": "<f4", b"shape": [4]}
    with pytest.raises(WireError, match=r"^'observation/state': ndarray: shape \[4\] of <f4 needs 16 bytes"):
        unpackb(msgpack.packb({"prompt": "x", "observation/state": bad}, use_bin_type=True))
    obj = {b"__npgeneric__": True, b"data": 1, b"dtype": "|O"}
    with pytest.raises(WireError, match=r"^'meta'\[1\]\['x'\]: npgeneric: object dtype"):
        unpackb(msgpack.packb({"meta": [0, {"x": obj}]}, use_bin_type=True))


def test_random_bytes_never_raise_anything_but_wire_error():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        blob = rng.integers(0, 256, size=int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
        try:
            unpackb(blob)
        except WireError:
            pass
