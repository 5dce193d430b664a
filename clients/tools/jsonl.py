"""JSONL input of the tools: one JSON object a line, blank lines skipped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def read_objects(lines: Iterable[str], source: str = "<jsonl>") -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line; ValueError names the line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not JSON: {exc}") from exc


def read_text_rows(
    lines: Iterable[str], source: str = "<jsonl>"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows `{"text": ..., ...}`: objects with a "text" string, with their line numbers."""
    for number, row in read_objects(lines, source):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f'{source}:{number}: expected an object with a "text" string')
        yield number, row
