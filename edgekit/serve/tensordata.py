"""Tensor values from JSON requests, checked: the server side of edgekit.oipwire.

A value must fit its datatype exactly - an integer type takes integers (or integral numbers
such as 3.0) within its range, BOOL takes true/false, the float types take numbers whose
magnitude the type can hold (or the strings "NaN", "Infinity", "-Infinity": oipwire.py says
why), BYTES takes strings - or the request is a 400 naming the input, the value and its index.
numpy alone casts silently (INT64 1.7 -> 1, BOOL "x" -> True, FP32 "1" -> 1.0, FP16 1e6 ->
inf), so the values are first taken as an object array, their Python types are collected in
one C-level pass, and ranges are checked on whole arrays: a large valid input costs a few
percent of what parsing its JSON text already did.

The coding both ends share (datatypes, JSON out, BYTES in the binary extension) is in
edgekit.oipwire, which the client imports without serve; its names are re-exported here for
serve's codec (oip.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.oipwire import NON_FINITE, OIP_TO_NUMPY, BadValue, json_data, pack_bytes, unpack_bytes
from edgekit.serve.quietlog import show

__all__ = ["BadValue", "json_data", "json_values", "pack_bytes", "unpack_bytes"]


def _json_show(value: Any) -> str:
    """A client's JSON value for a message, short."""
    if isinstance(value, str):
        return f"the string {show(value, 24)}"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int | float):
        return _num(value)
    return "a nested list" if isinstance(value, list) else "an object"


def _num(value: Any) -> str:
    """A client's number for a message, cut (JSON integers can have thousands of digits)."""
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _first(flat: np.ndarray, kind: type) -> tuple[int, Any]:
    """Index and value of the first element of Python type `kind` (for the error message)."""
    i = next(i for i, v in enumerate(flat) if type(v) is kind)
    return i, flat[i]


def json_values(name: str, datatype: str, data: list) -> np.ndarray:
    """The flat array of `datatype` for an input's JSON `data` (nested lists allowed)."""
    try:
        flat = np.asarray(data, dtype=object).reshape(-1)
    except (ValueError, TypeError, RecursionError):
        raise BadValue(f"input '{name}': data is not a regular nested list") from None
    kinds = set(map(type, flat))
    if datatype == "BYTES":
        _allow(name, datatype, flat, kinds, {str}, "strings")
        return flat
    if datatype == "BOOL":
        _allow(name, datatype, flat, kinds, {bool}, "true/false")
        return flat.astype(np.bool_)
    dtype = OIP_TO_NUMPY[datatype]
    if dtype.kind == "f":
        return _floats(name, datatype, flat, kinds, dtype)
    return _integers(name, datatype, flat, kinds, dtype)


def _allow(name: str, datatype: str, flat: np.ndarray, kinds: set, allowed: set,
           what: str) -> None:
    wrong = sorted(kinds - allowed, key=lambda k: k.__name__)
    if wrong:
        i, value = _first(flat, wrong[0])
        raise BadValue(
            f"input '{name}': {datatype} takes {what}, "
            f"got {_json_show(value)} at index {i}"
        )


def _integers(name: str, datatype: str, flat: np.ndarray, kinds: set,
              dtype: np.dtype) -> np.ndarray:
    _allow(name, datatype, flat, kinds, {int, float}, "integers")
    info = np.iinfo(dtype)
    if float in kinds:  # JSON has one number type: 3.0 is the integer 3, 1.7 is refused
        wide = _wide_floats(name, datatype, flat)
        bad = ~np.isfinite(wide) | (wide != np.floor(wide))
        if bad.any():
            i = int(np.argmax(bad))
            raise BadValue(f"input '{name}': {datatype} takes integers, got "
                           f"{float(wide[i])!r} at index {i}")
    try:  # exact: numpy converts each Python int (and integral float) by value
        values = flat.astype(np.uint64 if dtype == np.uint64 else np.int64)
    except OverflowError:  # past 64 bits (or negative for UINT64)
        values = flat  # compared as Python numbers below: exact, and only on this path
    bad = (values < info.min) | (values > info.max)
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        i = int(np.argmax(bad))
        raise BadValue(f"input '{name}': value {_num(flat[i])} at index {i} is "
                            f"out of range for {datatype} [{info.min}, {info.max}]")
    return values.astype(dtype)


def _floats(name: str, datatype: str, flat: np.ndarray, kinds: set,
            dtype: np.dtype) -> np.ndarray:
    _allow(name, datatype, flat, kinds, {int, float, str}, "numbers")
    if str in kinds:  # only the spellings of NaN and +-Infinity
        for i, v in enumerate(flat):
            if type(v) is str:
                if v not in NON_FINITE:
                    raise BadValue(
                        f"input '{name}': {datatype} takes numbers (or \"NaN\", \"Infinity\", "
                        f"\"-Infinity\"), got {_json_show(v)} at index {i}")
                flat[i] = NON_FINITE[v]
    wide = _wide_floats(name, datatype, flat)
    with np.errstate(over="ignore"):
        values = wide.astype(dtype)
    overflow = np.isinf(values) & np.isfinite(wide)
    if overflow.any():
        i = int(np.argmax(overflow))
        raise BadValue(f"input '{name}': value {float(wide[i])!r} at index {i} is out of range "
                            f"for {datatype} (largest {float(np.finfo(dtype).max)!r})")
    return values


def _wide_floats(name: str, datatype: str, flat: np.ndarray) -> np.ndarray:
    """`flat` (numbers) as float64; an integer literal past float64's range is a BadValue."""
    try:
        return flat.astype(np.float64)
    except OverflowError:
        for i, v in enumerate(flat):
            try:
                float(v)
            except OverflowError:
                raise BadValue(f"input '{name}': value {_num(v)} at index {i} is out of "
                               f"range for {datatype}") from None
        raise
