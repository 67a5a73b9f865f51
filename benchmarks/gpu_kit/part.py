"""A section's result file, rewritten after every measured row: when a section is killed at its
time limit, the rows it finished are still reported."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Part:
    """The dict a section fills in; :meth:`save` writes it atomically (write, then rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"status": "running", "rows": []}

    def add_row(self, row: dict[str, Any]) -> None:
        self.data["rows"].append(row)
        self.save()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_plain) + "\n")
        os.replace(tmp, self.path)

    @staticmethod
    def read(path: Path) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data


def _plain(obj: Any) -> Any:
    """numpy scalars and paths as JSON values."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
