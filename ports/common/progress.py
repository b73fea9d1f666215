"""Progress bars: tqdm on a terminal (or AUDIO_PORTS_PROGRESS=1), silent in logs and CI."""
from __future__ import annotations

import os
import sys
from typing import Iterable


def enabled() -> bool:
    env = os.environ.get("AUDIO_PORTS_PROGRESS")
    if env is not None:
        return env not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, total: int | None = None,
             desc: str | None = None, unit: str = "it", enable: bool = True, leave: bool = False):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave,
                disable=not (enable and enabled()), dynamic_ncols=True)
