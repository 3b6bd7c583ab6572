"""The PostgreSQL binary COPY of (score, label) is parsed exactly, and odd streams refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from app.feedback.repository import _pg_binary_rows

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


def stream(rows: list[tuple[float, bool]], header: bytes = HEADER) -> bytearray:
    body = b"".join(
        struct.pack(">hid", 2, 8, score) + struct.pack(">i?", 1, label) for score, label in rows
    )
    return bytearray(header + body + struct.pack(">h", -1))


def test_rows_are_read_bit_for_bit() -> None:
    rows = [(0.0, False), (1.0, True), (5e-324, True), (0.1 + 0.2, False)]
    parsed = _pg_binary_rows(stream(rows))
    assert parsed["score"].astype(np.float64).tolist() == [score for score, _ in rows]
    assert parsed["label"].astype(bool).tolist() == [label for _, label in rows]
    assert len(_pg_binary_rows(stream([]))) == 0


def test_a_header_extension_is_skipped() -> None:
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 3) + b"abc"
    assert _pg_binary_rows(stream([(0.5, True)], header))["score"][0] == 0.5


@pytest.mark.parametrize(
    "broken",
    [
        bytearray(b"not a copy stream at all"),
        stream([(0.5, True)])[:-1],
        bytearray(
            HEADER + struct.pack(">hid", 3, 8, 0.5) + struct.pack(">i?", 1, True) + b"\xff\xff"
        ),
        bytearray(
            HEADER + struct.pack(">hid", 2, -1, 0.5) + struct.pack(">i?", 1, True) + b"\xff\xff"
        ),
    ],
)
def test_unexpected_layouts_are_refused(broken: bytearray) -> None:
    with pytest.raises(ValueError, match="PostgreSQL binary COPY"):
        _pg_binary_rows(broken)
