"""Sizes people write ("512M", "10G") as bytes."""
from __future__ import annotations

import re

from .exceptions import InvalidValue

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# A container's disk bound below this leaves an ext4 with a journal no room to be useful.
MIN_DISK = 64 << 20


def parse_size(value: object, what: str = "size") -> int:
    """Bytes from an int or a string like 512M, 10G (powers of 1024); InvalidValue otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = re.fullmatch(r"([0-9]+)([KMGT]?)", value.strip().upper()) if isinstance(value, str) else None
    if m is None:
        raise InvalidValue(f"invalid {what} {value!r}: a size like 512M or 10G")
    return int(m.group(1)) * _UNITS[m.group(2)]

