"""Tiny tqdm helper: progress bars that stay silent off a terminal or when progress is switched off."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None, desc: str, enabled: bool = True, unit: str = "run") -> tqdm:
    """A tqdm bar with a known total; disabled when ``enabled`` is false or stderr is not a terminal."""
    stream = sys.stderr
    disable = not enabled or not (hasattr(stream, "isatty") and stream.isatty())
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)
