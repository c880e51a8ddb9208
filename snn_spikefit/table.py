"""A small result table: prints aligned, saves as Markdown, CSV and JSON.

Reports (codebook summaries, pruning, deployment metrics, benchmarks) return
rows; :class:`Table` gives them one consistent look in a terminal and in a
paper.

>>> t = Table(["layer", "m"], [["fc1", 4], ["fc2", 3]])
>>> print(t)
layer  m
-----  -
fc1    4
fc2    3
>>> print(t.to_markdown())
| layer | m |
|---|---|
| fc1 | 4 |
| fc2 | 3 |
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["Table", "format_value"]


def format_value(value: Any) -> str:
    """Render one cell: floats with 4 significant digits, lists compactly."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


@dataclass
class Table:
    """Rows of values under named columns."""

    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    title: str | None = None

    def __post_init__(self) -> None:
        self.columns = list(self.columns)
        self.rows = [list(r) for r in self.rows]
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"Table row {i} has {len(row)} cells, expected {len(self.columns)} "
                    f"(columns {self.columns})"
                )

    def add_row(self, row: Sequence[Any]) -> None:
        if len(row) != len(self.columns):
            raise ValueError(
                f"Table.add_row: row has {len(row)} cells, expected {len(self.columns)} "
                f"(columns {self.columns})"
            )
        self.rows.append(list(row))

    def records(self) -> list[dict[str, Any]]:
        """Rows as dictionaries keyed by column name."""
        return [dict(zip(self.columns, r)) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        cells = [[str(c) for c in self.columns]] + [
            [format_value(v) for v in r] for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = []
        if self.title:
            lines.append(self.title)
        for n, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        sep = "|" + "---|" * len(self.columns)
        body = ["| " + " | ".join(format_value(v) for v in r) + " |" for r in self.rows]
        text = "\n".join([head, sep, *body])
        return f"**{self.title}**\n\n{text}" if self.title else text

    def to_csv(self, path: str | Path | None = None) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for r in self.rows:
            writer.writerow([json.dumps(v) if isinstance(v, (list, dict)) else v for v in r])
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps({"title": self.title, "rows": self.records()}, indent=2, default=_jsonable)
        if path is not None:
            Path(path).write_text(text)
        return text


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
