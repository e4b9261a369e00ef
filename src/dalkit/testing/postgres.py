"""Throwaway PostgreSQL clusters for tests, built from the system's own binaries.

Also owns the helpers that create and drop databases on any server given its URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

from dalkit.testing._admin import AdminConnection
from dalkit.testing._lifecycle import in_this_process_only, spawn
from dalkit.testing._server import LocalServer, Owner, ServerStartError, make_root

__all__ = ["PostgresServer", "create_database", "drop_database"]

SUPERUSER = "dalkit"
_READY_TIMEOUT = 30.0
_LOG_TAIL_LINES = 30
_BINARIES = ("initdb", "pg_ctl", "postgres")
_DEBIAN_BIN_DIRS = Path("/usr/lib/postgresql")  # <version>/bin


class PostgresServer(LocalServer):
    """A private PostgreSQL cluster on 127.0.0.1, removed again by ``stop()``.

    Args:
        port: The port to listen on (default: a free one).
        bin_dir: Where ``initdb``, ``pg_ctl`` and ``postgres`` are (default: found on this
            machine).

    Examples:
        ```python
        server = PostgresServer()
        server.start()
        try:
            db = Database(server.create_database("app_test"))
        finally:
            server.stop()  # the cluster and its files are gone
        ```
    """

    _binaries = _BINARIES  # what start() runs

    def __init__(self, *, port: int | None = None, bin_dir: str | Path | None = None) -> None:
        super().__init__()
        self._bin_dir = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        self._requested_port = port
        self._password = secrets.token_urlsafe(18)
        self._root: Path | None = None
        self._owner: Owner | None = None
        self._postmaster = _Postmaster()

    @property
    def password(self) -> str:
        """The ``dalkit`` superuser's password, random for each server."""
        return self._password

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (the server must be started)."""
        return self._require_root() / "data"

    @property
    def url(self) -> str:
        """Driverless URL of the ``postgres`` database, as the ``dalkit`` superuser."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """A driverless URL of ``database``, as the ``dalkit`` superuser.

        Args:
            database: The database name.

        Returns:
            The URL, password included: a test secret, never a production one.
        """
        password = quote(self._password, safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster in a temporary directory and start it; does nothing when it
        runs already."""
        if self.running:
            return
        missing = _missing(self._bin_dir, self._binaries)
        if missing:
            raise ServerStartError(
                f"no {', '.join(missing)} in {self._bin_dir}: the PostgreSQL server binaries "
                "are needed (install the postgresql package, or set DALKIT_TEST_POSTGRES_URL)"
            )
        self._owner = Owner.for_current_process()
        self._root = make_root(self._owner)
        # Registered before anything can fail, so a half-started cluster is still
        # removed when the interpreter exits.
        self._finalizer = weakref.finalize(
            self,
            in_this_process_only(_shutdown),
            self._pg_ctl_args("stop", "-m", "fast", "-w"),
            self._owner,
            self._root,
            self._postmaster,
        )
        try:
            self._initdb()
            self._configure()
            # the port is chosen at the last moment: the less time before the bind, the less
            # another run can take it
            self._start_on_a_free_port(self._launch, self._root / "server.log")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and remove its files."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None

    def restart(self) -> None:
        """Restart the server, keeping its data (settings that need a restart); one that was
        stopped or crashed meanwhile is started again."""
        if not self.running:
            raise RuntimeError("PostgresServer is not started")
        if self._postmaster.exit_code() is None:
            self._pg_ctl_stop("fast")
        self._launch()

    def create_database(self, name: str) -> str:
        """Create an empty database.

        Args:
            name: The new database's name.

        Returns:
            Its driverless URL.
        """
        return create_database(self.url, name)

    def drop_database(self, name: str) -> None:
        """Drop a database, with its connections.

        Args:
            name: The database's name.
        """
        drop_database(self.url, name)

    def _require_root(self) -> Path:
        if self._root is None:
            raise RuntimeError("PostgresServer is not started")
        return self._root

    def _pg_ctl_args(self, *args: str) -> list[str]:
        root = self._require_root()
        return [
            str(self._bin_dir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-l",
            str(root / "server.log"),
            *args,
        ]

    def _launch(self) -> None:
        # postgres itself, not `pg_ctl start`: pg_ctl's postmaster is no child of ours, so it
        # could not be told to die with this process (`dalkit.testing._lifecycle`)
        root = self._require_root()
        if self._postmaster.exit_code() is None:  # its process would be lost, still running
            raise ServerStartError(f"PostgreSQL on 127.0.0.1:{self.port} runs already")
        self._postmaster.reap()
        with (root / "server.log").open("ab") as log:
            self._postmaster.process = spawn(
                [str(self._bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(self.port)],
                root,
                signal.SIGQUIT,  # immediate shutdown: it stops its children and frees its memory
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._require_owner().subprocess_kwargs(),
            )
        self._wait_until_ready()

    def _pg_ctl_stop(self, mode: str) -> None:
        """Stop the server (``pg_ctl stop -m mode``), keeping its files."""
        self._run(self._pg_ctl_args("stop", "-m", mode, "-w"), "pg_ctl stop")
        self._postmaster.reap()

    def _initdb(self) -> None:
        root = self._require_root()
        pwfile = root / "pwfile"
        pwfile.write_text(scram_secret(self._password) + "\n")
        pwfile.chmod(0o600)
        self._require_owner().chown(pwfile)
        try:
            self._run(
                [
                    str(self._bin_dir / "initdb"),
                    f"--pgdata={root / 'data'}",
                    f"--username={SUPERUSER}",
                    f"--pwfile={pwfile}",
                    # Socket connections are password-checked too: the harness
                    # should behave like a real server, not a trusting one.
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _configure(self) -> None:
        root = self._require_root()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{root}'",
            "max_connections": "300",
            # PostgreSQL's default, 0, refuses PREPARE TRANSACTION: two-phase commits are tested
            "max_prepared_transactions": "20",
            # Durability is worthless for a cluster deleted after the run.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # Each CREATE DATABASE writes its template (~8 MB) to the WAL; on a RAM disk, a
            # checkpoint is cheaper than the memory a default 1 GB of WAL would hold.
            "max_wal_size": "'256MB'",
        }
        with (root / "data" / "postgresql.conf").open("a") as conf:
            conf.write("\n# dalkit.testing\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _wait_until_ready(self) -> None:
        # ready is when the TCP path and the password work, which is what the tests rely on
        import psycopg

        deadline = time.monotonic() + _READY_TIMEOUT
        last_error = ""
        while time.monotonic() < deadline:
            exited = self._postmaster.exit_code()
            if exited is not None:
                last_error = f"postgres exited with code {exited}"
                break
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last_error = str(exc).replace(self._password, "***")
            time.sleep(0.05)
        within = (
            "" if self._postmaster.exit_code() is not None else f" within {_READY_TIMEOUT:.0f}s"
        )
        raise ServerStartError(
            f"PostgreSQL on 127.0.0.1:{self.port} did not accept connections{within} "
            f"(last error: {last_error})\n{self._log_tail()}"
        )

    def _run(self, args: Sequence[str], what: str) -> None:
        owner = self._require_owner()
        result = subprocess.run(
            args,
            cwd=self._require_root(),
            capture_output=True,
            text=True,
            check=False,
            **owner.subprocess_kwargs(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().replace(self._password, "***")
            raise ServerStartError(
                f"{what} failed with exit code {result.returncode}:\n{output}\n{self._log_tail()}"
            )

    def _require_owner(self) -> Owner:
        if self._owner is None:
            raise RuntimeError("PostgresServer is not started")
        return self._owner

    def _log_tail(self) -> str:
        log = self._require_root() / "server.log"
        try:
            lines = log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except FileNotFoundError:
            lines = ["(no server log was written)"]
        return "server log (last lines):\n" + "\n".join(lines).replace(self._password, "***")


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin``, else wherever ``pg_ctl`` is on PATH."""
    candidates = [path for path in _DEBIAN_BIN_DIRS.glob("*/bin") if not _missing(path, _BINARIES)]
    if candidates:
        return max(candidates, key=lambda path: _version_key(path.parent.name))
    on_path = shutil.which("pg_ctl")
    if on_path is not None and not _missing(Path(on_path).parent, _BINARIES):
        return Path(on_path).parent
    raise ServerStartError(
        f"no PostgreSQL server binaries ({', '.join(_BINARIES)}) found in "
        f"{_DEBIAN_BIN_DIRS}/*/bin or on PATH "
        "(install the postgresql package, or set DALKIT_TEST_POSTGRES_URL)"
    )


def _missing(bin_dir: Path, names: Sequence[str]) -> list[str]:
    return [name for name in names if not (bin_dir / name).is_file()]


def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server at ``url``; return the URL that points at it."""
    with closing(AdminConnection(url)) as admin:
        return admin.create(name)


def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` on the server at ``url``, disconnecting whoever still uses it."""
    with closing(AdminConnection(url)) as admin:
        admin.drop(name)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class _Postmaster:
    """The running postmaster, a child of this process, replaced by each (re)start."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def exit_code(self) -> int | None:
        """None while it runs; its exit code once it stopped, -1 before it was started."""
        return -1 if self.process is None else self.process.poll()

    def reap(self) -> None:
        """Wait for the stopped postmaster (killing it past the timeout)."""
        if self.process is not None:
            try:
                self.process.wait(timeout=_READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def _shutdown(stop_args: list[str], owner: Owner, root: Path, postmaster: _Postmaster) -> None:
    # A failed stop (say, the server never started) must not keep the files around.
    if (root / "data" / "postmaster.pid").exists():
        subprocess.run(
            stop_args, cwd=root, capture_output=True, check=False, **owner.subprocess_kwargs()
        )
    postmaster.reap()
    shutil.rmtree(root, ignore_errors=True)


def scram_secret(password: str, iterations: int = 1) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL stores for ``password`` (RFC 5803's form), which
    it keeps as given. Client and server each derive the key ``iterations`` times per
    connection: the 4,096 of a password the server hashes itself cost more than the rest of a
    test's connection (the suite opens thousands). Throwaway servers need no brute-force cost.

    Args:
        password: The clear password.
        iterations: PBKDF2's rounds.

    Returns:
        ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, base64 parts.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
