"""The measurement store: one row per (arch id, device config), rewritten atomically per row.

Rewriting the whole file for each row costs O(rows) of I/O, a few ms at 1,000 rows, while a
measurement takes a second or more; in return the file on disk is always a complete, valid
Parquet or CSV file, and a kill -9 loses at most the arch in flight.

Several processes may write one file (two profiles, boards of a fleet run separately): each
row is put under a file lock (`<file>.lock`, beside it), after re-reading what the others
wrote since, so no writer drops another's rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from filelock import FileLock

from nasctl.errors import UserError
from nasctl.tables import read_table, table_format, write_table

KEY = ["arch_id", "config_id"]


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        table_format(self.path)  # unknown extension -> UserError before anything runs
        self._lock = FileLock(f"{self.path}.lock")
        self._load()

    def _load(self) -> None:
        self._df = read_table(self.path) if self.path.exists() else pd.DataFrame()
        missing = [c for c in (*KEY, "status") if c not in self._df] if len(self._df.columns) else []
        if missing:  # said now, not as a KeyError after the first arch is measured
            raise UserError(f"{self.path}: not a row store of nasctl profile (no {', '.join(missing)} column); "
                            "give a new file or the one a profile wrote")

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
        return self._df

    def put(self, row: dict) -> None:
        """Add or replace the row for its (arch id, config id), then rewrite the file. Under the
        lock the file is read again first (a few ms), so another writer's rows are kept."""
        with self._lock:
            self._load()
            df = self._df
            if not df.empty:
                df = df[~((df["arch_id"] == row["arch_id"]) & (df["config_id"] == row["config_id"]))]
            new = pd.DataFrame([row])
            self._df = new if df.empty else pd.concat([df, new], ignore_index=True)
            write_table(self._df, self.path)
