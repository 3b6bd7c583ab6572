"""Feedback files: CSV with a header row, or NDJSON (one JSON object per line)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

IMPORT_FIELDS = ("score", "label", "segment", "external_id", "source", "occurred_at", "metadata")

# A line read from a file: its number, the record (or why it is not one), and the
# ``received_at`` an export wrote beside it (None in other files).
Line = tuple[int, dict[str, Any] | str, str | None]


def file_format(path: Path, given: str | None = None) -> tuple[str, str | None]:
    """The format to read ``path`` in, and a note for a person when it was not obvious.

    ``given`` wins; then the suffix (``.csv``; ``.ndjson`` or ``.jsonl``); otherwise the first
    non-blank line decides: a JSON object means NDJSON, anything else CSV.
    """
    if given:
        return given, None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv", None
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson", None
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), "")
    fmt = "ndjson" if first.lstrip().startswith("{") else "csv"
    why = "a JSON object" if fmt == "ndjson" else "not a JSON object"
    return fmt, f"{path.name}: read as {fmt.upper()} (its first line is {why}; --format chooses)"


def same_instant(first: Any, second: str | None) -> bool:
    """Whether two ISO 8601 texts name the same instant (False if either is not one)."""
    if not isinstance(first, str) or second is None:
        return False
    try:
        return datetime.fromisoformat(first) == datetime.fromisoformat(second)
    except (TypeError, ValueError):
        return False  # unparseable, or one of them without a zone: not an export's pair


def _parse_label(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    return text  # the service names the field and refuses it


def csv_records(handle: Iterable[str]) -> Iterator[Line]:
    """Records of a CSV file with a header row; empty cells are absent fields."""
    reader = csv.DictReader(handle)
    for row in reader:
        record: dict[str, Any] = {}
        for key in IMPORT_FIELDS:
            value = row.get(key)
            if value in (None, ""):
                continue
            if key == "score":
                try:
                    number = float(value)
                except ValueError:
                    number = math.nan
                # Text that is not a finite number goes as text: the service names the field.
                record[key] = number if math.isfinite(number) else value
            elif key == "label":
                record[key] = _parse_label(value)
            elif key == "metadata":
                try:
                    record[key] = json.loads(value)
                except ValueError:
                    record[key] = value
            else:
                record[key] = value
        yield reader.line_num, record, row.get("received_at") or None


def ndjson_records(handle: Iterable[str]) -> Iterator[Line]:
    """Records of an NDJSON file; blank lines are skipped."""
    for line_no, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            # NaN and Infinity stay text, which JSON can carry and the service refuses by name.
            parsed = json.loads(line, parse_constant=str)
        except ValueError as exc:
            yield line_no, f"not JSON: {exc.msg}", None
            continue
        if not isinstance(parsed, dict):
            yield line_no, "not a JSON object", None
            continue
        record = {key: parsed[key] for key in IMPORT_FIELDS if key in parsed}
        received = parsed.get("received_at")
        yield line_no, record, received if isinstance(received, str) else None


class CountingLines:
    """Iterates a text file's lines and counts the bytes read, for progress reports."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.bytes = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.bytes += len(line.encode())
            yield line


def read_records(lines: Iterable[str], fmt: str) -> Iterator[Line]:
    """The records of ``lines`` in format ``csv`` or ``ndjson``."""
    if fmt not in ("csv", "ndjson"):
        raise ValueError(f"unknown format {fmt!r}; expected 'csv' or 'ndjson'")
    return csv_records(lines) if fmt == "csv" else ndjson_records(lines)
