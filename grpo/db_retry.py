"""Retrying a database write that lost a race with another process.

Several processes share one SQL store (a sweep's Optuna study, the runs of an MLflow store):
SQLite reports a lock held beyond its busy timeout, and two processes that create the same row
at the same moment (a table, a study, an MLflow experiment or dataset) leave the loser with a
uniqueness error although the row it wanted is now there. Both go away on retry.

Imported by the sweep's storage and by tracking, so it stays cheap: no database import here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_MESSAGES = ("database is locked", "database table is locked")
# The loser of a creation race sees one of these (SQLite's and PostgreSQL's words); on retry
# the winner's rows are there.
CREATION_RACE = ("already exists", "duplicate key", "uniqueviolation", "unique constraint failed")


def is_lock_error(exc: BaseException, also: Sequence[str] = ()) -> bool:
    """Whether `exc` (or its cause) is SQLite reporting a lock, or one of the `also` messages."""
    return mentions(exc, (*LOCK_MESSAGES, *also))


def mentions(exc: BaseException, messages: Sequence[str]) -> bool:
    """Whether `exc` or its cause says one of `messages` (lower case)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text += f" {type(cause).__name__}: {cause}".lower()
    return any(m in text for m in messages)


def retry_on_lock(fn: Callable[[], T], attempts: int = 6, delay: float = 0.5, also: Sequence[str] = ()) -> T:
    """Call fn, retrying with back-off when SQLite reports a lock (beyond its busy timeout)
    or one of the `also` messages."""
    return retry_on(fn, (*LOCK_MESSAGES, *also), attempts, delay)


def retry_on(fn: Callable[[], T], messages: Sequence[str], attempts: int = 6, delay: float = 0.5) -> T:
    """Call fn, retrying with back-off while it fails with an error that says one of `messages`."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            if i == attempts - 1 or not mentions(exc, messages):
                raise
            log.warning("store busy (another process), retrying in %.1fs: %s", delay, first_line(exc))
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
