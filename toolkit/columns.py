"""Column checks shared by recipes and analyses."""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from toolkit.errors import UserError


def require_columns(table: pd.DataFrame, columns: Iterable[str], who: str) -> None:
    """Fail with a message naming the missing columns and the ones that are there."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        have = ", ".join(map(str, table.columns)) or "(none)"
        raise UserError(f"{who}: missing column(s) {', '.join(missing)}; the table has: {have}")

