"""The Optuna storage every process of a sweep shares: its URL, one connection per process,
retries on SQLite locks and creation races, the password kept out of the URL, the heartbeat
settings, and one-line errors for a storage that cannot be reached.

Used by the sweeper and by the in-job TrialReporter, so importing it must stay cheap:
optuna and sqlalchemy load inside the functions that need them.

Passwords: the URL travels to every job and into logs, tags and result files, so it never
carries one. ``postgresql+psycopg://optuna@db.example.org/optuna`` gets its password from
the environment: ``OPTUNA_STORAGE_PASSWORD`` (added to the URL in memory, when connecting),
or libpq's own ``PGPASSWORD`` / ``~/.pgpass`` for PostgreSQL. A password written in the URL
is moved to ``OPTUNA_STORAGE_PASSWORD`` for the jobs, and masked wherever the URL is shown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException

from grpo.db_retry import CREATION_RACE, retry_on_lock

log = logging.getLogger(__name__)


DEFAULT_STORAGE_TIMEOUT = 30.0
SQLITE_PREFIX = "sqlite:///"
PASSWORD_ENV = "OPTUNA_STORAGE_PASSWORD"
# File systems on which SQLite's locking cannot be trusted across machines.
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph")
NETWORK_FILESYSTEM_PREFIXES = ("fuse.sshfs", "fuse.glusterfs", "glusterfs", "fuse.s3fs", "9p", "afs")

_STORAGES: dict[tuple, Any] = {}


class StorageUnavailable(CompactHydraException):
    """The storage could not be reached or refused us; Hydra prints the one line, no traceback."""


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's heartbeat settings: a worker records a trial's heartbeat every `interval`
    seconds; a RUNNING trial without one for `grace_period` seconds is failed by the next
    worker that looks, and `callback(study, frozen_trial)` runs (the retry)."""

    interval: int
    grace_period: int
    callback: Callable[[Any, Any], None] | None = None


# --------------------------------------------------------------------------- the URL
def resolve_storage_url(storage: str | None, cwd: str) -> str:
    """The storage URL every process uses: relative SQLite paths made absolute (jobs
    may chdir) and the SQLite file's folder created. None means ``<cwd>/outputs/optuna.db``."""
    url = str(storage) if storage else f"{SQLITE_PREFIX}{cwd}/outputs/optuna.db"
    path = sqlite_file(url)
    if path is not None:
        db, sep, query = url[len(SQLITE_PREFIX) :].partition("?")
        p = Path(db)
        if not p.is_absolute():
            p = Path(cwd) / p
        p.parent.mkdir(parents=True, exist_ok=True)
        url = f"{SQLITE_PREFIX}{p}{sep}{query}"
    return url


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    path = url[len(SQLITE_PREFIX) :].partition("?")[0]
    if not path or path.startswith((":memory:", "file:")):
        return None
    return path


def mask_url(url: str) -> str:
    """The storage URL with any password hidden (for logs, tags and result files)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None)."""
    if url.startswith("sqlite"):
        return url, None
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: leave it to Optuna's error
        return url, None
    if u.password is None:
        return url, None
    bare = u.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
    return bare.render_as_string(hide_password=False), str(u.password)


def keep_password_out(url: str) -> str:
    """The URL without its password, which moves to $OPTUNA_STORAGE_PASSWORD (inherited by the
    jobs this process starts): the URL is what jobs, logs and result files see."""
    bare, password = split_password(url)
    if password is not None:
        log.warning(
            "the Optuna storage URL holds a password: Hydra writes the command line into every job's "
            ".hydra/ folder; leave it out of the URL and export %s instead",
            PASSWORD_ENV,
        )
        os.environ.setdefault(PASSWORD_ENV, password)
    return bare


def with_password(url: str, env: str = PASSWORD_ENV) -> str:
    """`url` with the password from `env` when it has none (only ever held in memory)."""
    password = os.environ.get(env)
    if not password or url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.password is not None:
        return url
    return u.set(password=password).render_as_string(hide_password=False)


def network_filesystem(path: str, mounts: str | None = None) -> tuple[str, str] | None:
    """(file system type, mount point) when `path` lies on a network file system, else None.
    `mounts` is /proc/mounts' text (read when None)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[1])):
            best = (parts[2], point)
    if best and (best[0] in NETWORK_FILESYSTEMS or best[0].startswith(NETWORK_FILESYSTEM_PREFIXES)):
        return best
    return None


def warn_if_network_sqlite(url: str) -> str | None:
    """Warn (and return the warning) when a SQLite study lives on a network file system."""
    path = sqlite_file(url)
    if path is None:
        return None
    found = network_filesystem(str(Path(path).parent))
    if found is None:
        return None
    fstype, point = found
    msg = (
        f"The Optuna storage {url} is a SQLite file on a network file system ({fstype} at {point}): "
        "SQLite's locks do not hold there, so it will not hold several workers (lost updates, "
        "'database is locked'); give workers on several machines a database server instead, "
        "e.g. hydra.sweeper.storage=postgresql+psycopg://USER@HOST/DB (docs/sweeps.md)"
    )
    log.warning(msg)
    return msg


# --------------------------------------------------------------------------- connections
def make_storage(
    url: str,
    timeout: float = DEFAULT_STORAGE_TIMEOUT,
    skip_table_creation: bool = False,
    heartbeat: Heartbeat | None = None,
) -> Any:
    """An Optuna RDBStorage for `url` (one per process, URL and heartbeat: with the basic
    launcher the trials run in the sweeper's process). SQLite gets a busy timeout, so
    concurrent trials wait for the lock instead of failing with "database is locked".
    A storage that cannot be reached is a StorageUnavailable with one line."""
    key = (url, float(timeout), os.getpid(), heartbeat)
    if key not in _STORAGES:
        _STORAGES[key] = _new_storage(url, timeout, skip_table_creation, heartbeat)
    return _STORAGES[key]


def _new_storage(url: str, timeout: float, skip_table_creation: bool, heartbeat: Heartbeat | None) -> Any:
    import optuna

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": float(timeout)}}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": max(1, int(min(timeout, 30)))}
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs, "skip_table_creation": skip_table_creation}
    if heartbeat is not None:
        kwargs["heartbeat_interval"] = int(heartbeat.interval)
        kwargs["grace_period"] = int(heartbeat.grace_period)
        kwargs["heartbeat_stale_trial_callback"] = heartbeat.callback
    full_url = with_password(url)
    try:
        with _quiet_experimental_warnings():
            return retry_on_lock(lambda: optuna.storages.RDBStorage(full_url, **kwargs), also=CREATION_RACE)
    except Exception as e:
        raise StorageUnavailable(storage_error_line(e, url)) from e


class _quiet_experimental_warnings:
    """heartbeat_interval is "experimental" in Optuna 5: say it once in our docs, not per process."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        try:
            from optuna.exceptions import ExperimentalWarning

            warnings.simplefilter("ignore", ExperimentalWarning)
        except ImportError:  # pragma: no cover
            pass

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def storage_error_line(exc: BaseException, url: str) -> str:
    """One line: which storage (password masked) and the database's own first line."""
    cause: BaseException = exc
    for _ in range(5):  # SQLAlchemy's wrapper -> the driver's error (`orig`) -> its cause
        deeper = getattr(cause, "orig", None) or cause.__cause__
        if not isinstance(deeper, BaseException) or deeper is cause:
            break
        cause = deeper
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    _, password = split_password(url)
    full_password = password or os.environ.get(PASSWORD_ENV)
    if full_password:
        text = text.replace(full_password, "***")
    hint = ""
    lowered = text.lower()
    if any(m in lowered for m in ("password authentication failed", "no password supplied", "access denied")):
        hint = f" (the password comes from ${PASSWORD_ENV} or, for PostgreSQL, $PGPASSWORD / ~/.pgpass)"
    elif any(m in lowered for m in ("connection refused", "resolve host", "translate host", "timeout", "timed out")):
        hint = " (is the database server running, and reachable from this machine?)"
    return f"Optuna storage {mask_url(url)} cannot be used: {text}{hint}"
