"""Logging for rule entry points: everything, including a failure's traceback, goes to the rule's log."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send log records to ``path`` (and stderr); log and re-raise any exception."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    # Third-party chatter at INFO (fontTools lists every glyph subset of every PDF) would drown our lines.
    for noisy in ("fontTools", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logger = logging.getLogger("nb360")
    try:
        yield logger
    except BaseException:
        logger.exception("failed")
        raise
    finally:
        for h in handlers:
            h.flush()


def progress(items: Iterable[T], total: int | None, desc: str, every_s: float = 10.0) -> Iterator[T]:
    """Yield ``items``, logging ``desc: done/total`` at most every ``every_s`` seconds (and at the end)."""
    logger = logging.getLogger("nb360.progress")
    t0 = t_last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - t_last >= every_s:
            t_last = now
            of = f"/{total}" if total else ""
            logger.info("%s: %d%s (%.0f s)", desc, done, of, now - t0)
    logger.info("%s: %d done in %.1f s", desc, done, time.monotonic() - t0)
