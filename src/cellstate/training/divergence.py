"""A loss that turns NaN or infinite stops the run: every later step would only spread it, and
the last good checkpoint must not be overwritten by a poisoned one."""

from __future__ import annotations

import math
from pathlib import Path


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the run stopped without saving."""


def check_loss(loss: float, where: str, checkpoint: Path | None, advice: str) -> None:
    """Diverged (saying where, which checkpoint is kept, and what to change) unless finite."""
    if math.isfinite(loss):
        return
    kept = (
        f"the last good checkpoint, {checkpoint}, is kept"
        if checkpoint is not None and checkpoint.is_file()
        else "no checkpoint had been written"
    )
    raise Diverged(f"the training loss became {loss} at {where}; stopped, {kept}; {advice}")
