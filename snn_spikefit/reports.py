"""One shape for every report: ``to_dict()``, ``to_json()``, ``to_csv()``, ``table()`` and ``str()``.

A report class defines :meth:`Report.to_dict` (JSON types, or values ``json`` can
print with ``default=str``) and :meth:`Report.table` (the rows a paper would
quote); the mixin derives the rest, so every report saves the same way.

>>> from dataclasses import dataclass
>>> from snn_spikefit.table import Table
>>> @dataclass(frozen=True)
... class Tiny(Report):
...     n: int
...     def to_dict(self): return {"n": self.n}
...     def table(self):
...         t = Table(["n"]); t.add_row([self.n]); return t
>>> Tiny(3).to_json()
'{\\n  "n": 3\\n}'
>>> Tiny(3).to_csv()
'n\\n3\\n'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .table import Table


class Report:
    """Mixin: subclasses define ``to_dict()`` and ``table()``."""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def table(self) -> Table:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """:meth:`to_dict` as indented JSON; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, default=str)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """:meth:`table` as CSV; written to ``path`` when given."""
        return self.table().to_csv(path)

    def __str__(self) -> str:
        return str(self.table())
