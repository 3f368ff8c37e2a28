"""The Optuna storage every process of a sweep shares: its URL, one connection per process,
retries on SQLite locks, and the URL with its password hidden.

Used by the sweeper and by the in-job TrialReporter, so importing it must stay cheap:
optuna and sqlalchemy load inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STORAGE_TIMEOUT = 30.0
SQLITE_PREFIX = "sqlite:///"
_LOCK_MESSAGES = ("database is locked", "database table is locked")

_STORAGES: dict[tuple, Any] = {}


def resolve_storage_url(storage: str | None, cwd: str) -> str:
    """The storage URL every process uses: relative SQLite paths made absolute (jobs
    may chdir) and the SQLite file's folder created. None means ``<cwd>/outputs/optuna.db``."""
    url = str(storage) if storage else f"{SQLITE_PREFIX}{cwd}/outputs/optuna.db"
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        if path and not path.startswith(":memory:") and not path.startswith("file:"):
            db, sep, query = path.partition("?")
            p = Path(db)
            if not p.is_absolute():
                p = Path(cwd) / p
            p.parent.mkdir(parents=True, exist_ok=True)
            url = f"{SQLITE_PREFIX}{p}{sep}{query}"
    return url


def make_storage(url: str, timeout: float = DEFAULT_STORAGE_TIMEOUT, skip_table_creation: bool = False) -> Any:
    """An Optuna RDBStorage for `url` (one per process and URL: with the basic launcher the
    trials run in the sweeper's process). SQLite gets a busy timeout, so concurrent trials
    wait for the lock instead of failing with "database is locked"."""
    key = (url, float(timeout), os.getpid())
    if key not in _STORAGES:
        _STORAGES[key] = _new_storage(url, timeout, skip_table_creation)
    return _STORAGES[key]


def _new_storage(url: str, timeout: float, skip_table_creation: bool) -> Any:
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": float(timeout)}
    # Two processes creating the tables of a fresh database at once: the loser sees
    # "table ... already exists"; on retry the tables are there.
    return retry_on_lock(
        lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=skip_table_creation),
        also=("already exists",),
    )


def is_lock_error(exc: BaseException, also: Sequence[str] = ()) -> bool:
    """Whether `exc` (or its cause) is SQLite reporting a lock, or one of the `also` messages."""
    text = f"{type(exc).__name__}: {exc}".lower()
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text += f" {type(cause).__name__}: {cause}".lower()
    return any(m in text for m in (*_LOCK_MESSAGES, *also))


def retry_on_lock(fn: Callable[[], T], attempts: int = 6, delay: float = 0.5, also: Sequence[str] = ()) -> T:
    """Call fn, retrying with back-off when SQLite reports a lock (beyond its busy timeout)
    or one of the `also` messages."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            if i == attempts - 1 or not is_lock_error(exc, also):
                raise
            log.warning("storage locked, retrying in %.1fs (%s)", delay, exc)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def mask_url(url: str) -> str:
    """The storage URL with any password hidden (for logs, tags and result files)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url
