"""Logging for rule entry points: everything, including a failure's traceback, goes to the rule's log."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


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
    logger = logging.getLogger("nb360")
    try:
        yield logger
    except BaseException:
        logger.exception("failed")
        raise
    finally:
        for h in handlers:
            h.flush()
