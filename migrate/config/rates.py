"""How a rate is written (``--rate``, a preset's ``rate``): parsing only.

Presets and saved jobs name rates, and the engine paces by them; the
parser lives with the configuration so that reading a preset never needs
the engine (:mod:`migrate.engine.ratelimit` does the pacing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migrate.errors import UsageError

_UNITS = {"B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_AMOUNT = r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)"
_RATE = re.compile(rf"^\s*{_AMOUNT}\s*(?:/\s*s)?(?:\s+after\s+{_AMOUNT})?\s*$", re.IGNORECASE)
_MESSAGE_UNITS = ("", "MSG", "MSGS", "MESSAGES")


@dataclass(frozen=True)
class Rate:
    """A ceiling, optionally only after a free allowance (``20KB after 700MB``).

    The allowance lets a provider's daily quota be respected without slowing
    the everyday run: a nightly backup smaller than the allowance runs at full
    speed, a first backup of years of mail is paced once it is used up.
    """

    messages_per_second: float | None = None
    bytes_per_second: float | None = None
    free_messages: float = 0
    free_bytes: float = 0

    def __str__(self) -> str:
        if self.messages_per_second is not None:
            text = f"{self.messages_per_second:g} messages/s"
        else:
            text = f"{self.bytes_per_second:g} bytes/s"
        if self.free_bytes:
            text += f" after {self.free_bytes:g} bytes"
        elif self.free_messages:
            text += f" after {self.free_messages:g} messages"
        return text


def _amount(value: str, unit: str, text: str) -> tuple[float, bool]:
    """(amount, is_bytes) of '20', '20msg', '500KB', '1MiB'."""
    unit = unit.upper()
    if unit in _MESSAGE_UNITS:
        return float(value), False
    factor = _UNITS.get(unit)
    if factor is None:
        raise UsageError(f"bad --rate unit {unit!r} in {text!r}: use msg, KB, MB, GB "
                         "(or KiB, MiB, GiB)")
    return float(value) * factor, True


def parse_rate(text: str) -> Rate:
    """'20' or '20msg' -> 20 messages/s; '500KB', '2MB/s', '1MiB' -> bytes/s;
    '20KB after 700MB' -> the first 700 MB unpaced, then 20 KB/s."""
    m = _RATE.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise UsageError(f"bad --rate {text!r}: give messages per second (e.g. 20) or bytes "
                         "per second with a unit (e.g. 500KB, 2MB), optionally "
                         "'after' an allowance (e.g. '20KB after 700MB')")
    value, is_bytes = _amount(m.group(1), m.group(2), text)
    free, free_is_bytes = (0.0, is_bytes)
    if m.group(3) is not None:
        free, free_is_bytes = _amount(m.group(3), m.group(4), text)
        if free_is_bytes != is_bytes:
            raise UsageError(f"bad --rate {text!r}: the allowance after 'after' must be in the "
                             "rate's unit (bytes with bytes, messages with messages)")
    if is_bytes:
        return Rate(bytes_per_second=value, free_bytes=free)
    return Rate(messages_per_second=value, free_messages=free)


_SIZE = re.compile(rf"^\s*{_AMOUNT}\s*$")


def parse_size(text: str, option: str = "--max-bytes") -> int:
    """'500MB', '2GiB', '4096' (bytes) -> bytes, for options that bound an amount of mail."""
    m = _SIZE.match(text)
    unit = m.group(2).upper() if m else ""
    factor = 1 if unit in ("", "B") else _UNITS.get(unit)
    if m is None or factor is None or float(m.group(1)) <= 0:
        raise UsageError(f"bad {option} {text!r}: give a size such as 500MB, 2GB or 1GiB")
    return int(float(m.group(1)) * factor)
