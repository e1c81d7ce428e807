"""The measurement store: one row per (arch id, device config), rewritten atomically per row.

Rewriting the whole file for each row costs O(rows) of I/O, a few ms at 1,000 rows, while a
measurement takes a second or more; in return the file on disk is always a complete, valid
Parquet or CSV file, and a kill -9 loses at most the arch in flight.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nasctl.errors import UserError
from nasctl.tables import read_table, table_format, write_table

KEY = ["arch_id", "config_id"]


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        table_format(self.path)  # unknown extension -> UserError before anything runs
        self._df = read_table(self.path) if self.path.exists() else pd.DataFrame()
        missing = [c for c in (*KEY, "status") if c not in self._df] if len(self._df.columns) else []
        if missing:  # said now, not as a KeyError after the first arch is measured
            raise UserError(f"{self.path}: not a row store of nasctl profile (no {', '.join(missing)} column); "
                            "give a new file or the one a profile wrote")
        self._rows: list[dict] = []

    def done(self, config_id: str, include_errors: bool = True) -> set[str]:
        """Arch ids already stored for this device config (error rows too, unless told)."""
        df = self.frame()
        if df.empty or "config_id" not in df:
            return set()
        mine = df[df["config_id"] == config_id]
        if not include_errors:
            mine = mine[mine["status"] == "ok"]
        return set(mine["arch_id"])

    def frame(self) -> pd.DataFrame:
        if self._rows:
            new = pd.DataFrame(self._rows)
            self._df = new if self._df.empty else pd.concat([self._df, new], ignore_index=True)
            self._rows = []
        return self._df

    def put(self, row: dict) -> None:
        """Add or replace the row for its (arch id, config id), then rewrite the file."""
        df = self.frame()
        if not df.empty:
            same = (df["arch_id"] == row["arch_id"]) & (df["config_id"] == row["config_id"])
            if same.any():
                self._df = df[~same].reset_index(drop=True)
        self._rows.append(row)
        write_table(self.frame(), self.path)
