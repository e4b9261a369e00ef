"""A throwaway PgBouncer (the Debian ``pgbouncer`` binary) in transaction pooling mode in front
of a test PostgreSQL server, on 127.0.0.1; plus its pytest fixtures.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from dalkit.testing._lifecycle import in_this_process_only, spawn, stop_process
from dalkit.testing._server import LocalServer, Owner, ServerStartError, make_root
from dalkit.testing.postgres import SUPERUSER, PostgresServer, create_database

__all__ = ["PgBouncerServer", "pgbouncer_database_url", "pgbouncer_server"]

_READY_TIMEOUT = 20.0


class PgBouncerServer(LocalServer):
    """PgBouncer pooling ``server``'s databases, at most ``pool_size`` server connections per
    database and user, in ``pool_mode`` (transaction by default)."""

    def __init__(
        self, server: PostgresServer, *, pool_size: int = 10, pool_mode: str = "transaction"
    ) -> None:
        super().__init__()
        self._server = server
        self._pool_size = pool_size
        self._pool_mode = pool_mode
        self._process: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None

    def url_for(self, database: str) -> str:
        password = quote(self._server.password, safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if self.running:
            return
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).is_file():
            raise ServerStartError("pgbouncer is not installed (apt-get install pgbouncer)")
        owner = Owner.for_current_process()  # PgBouncer refuses to run as root
        self._root = make_root(owner, "dalkit-pgbouncer-")
        self._root.chmod(0o755)
        userlist = self._root / "userlist.txt"
        userlist.write_text(f'"{SUPERUSER}" "{self._server.password}"\n')
        userlist.chmod(0o600)
        owner.chown(userlist)
        try:
            self._start_on_a_free_port(
                lambda: self._launch(binary, owner, userlist), self._root / "pgbouncer.log"
            )
        except BaseException:
            self.stop()
            shutil.rmtree(self._root, ignore_errors=True)  # when nothing was launched
            raise

    def _launch(self, binary: str, owner: Owner, userlist: Path) -> None:
        assert self._root is not None
        if self._finalizer is not None:  # a start that failed: keep its files for this one
            self._finalizer.detach()
        ini = self._root / "pgbouncer.ini"
        ini.write_text(self._config(userlist))
        owner.chown(ini)
        log = (self._root / "pgbouncer.log").open("ab")
        self._process = spawn(
            [binary, str(ini)],
            self._root,
            signal.SIGKILL,  # it keeps nothing worth a clean stop
            cwd=self._root,
            stdout=log,
            stderr=subprocess.STDOUT,
            **owner.subprocess_kwargs(),
        )
        log.close()
        self._finalizer = weakref.finalize(
            self, in_this_process_only(stop_process), self._process, self._root
        )
        self._wait_until_ready()

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None

    def _config(self, userlist: Path) -> str:
        return "\n".join(
            [
                "[databases]",
                f"* = host=127.0.0.1 port={self._server.port}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self._port}",
                "unix_socket_dir =",
                "auth_type = scram-sha-256",
                f"auth_file = {userlist}",
                f"pool_mode = {self._pool_mode}",
                f"default_pool_size = {self._pool_size}",
                f"max_db_connections = {self._pool_size}",
                "max_client_conn = 500",
                "ignore_startup_parameters = extra_float_digits",
                # a client that leaves SET behind would leak it to the next one: the tests
                # must see such leaks, so nothing resets server connections between clients
                "server_reset_query =",
                "",
            ]
        )

    def _wait_until_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + _READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = str(exc).replace(self._server.password, "***")
            time.sleep(0.1)
        log = (
            "" if self._root is None else (self._root / "pgbouncer.log").read_text(errors="replace")
        )
        raise ServerStartError(f"PgBouncer did not accept connections ({last}):\n{log[-2000:]}")


@pytest.fixture(scope="session")
def pgbouncer_server(postgres_server: PostgresServer) -> Iterator[PgBouncerServer]:
    """PgBouncer in transaction mode, 10 server connections, in front of the session's server."""
    bouncer = PgBouncerServer(postgres_server)
    try:
        bouncer.start()
    except Exception as exc:
        pytest.fail(f"could not start PgBouncer: {exc}", pytrace=False)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def pgbouncer_database_url(
    pgbouncer_server: PgBouncerServer, postgres_server: PostgresServer
) -> Iterator[str]:
    """Driverless URL, through PgBouncer, of a fresh database (dropped after the test)."""
    name = f"b_{uuid.uuid4().hex}"
    create_database(postgres_server.url, name)
    try:
        yield pgbouncer_server.url_for(name)
    finally:
        _drop_through(postgres_server, name)


def _drop_through(server: PostgresServer, name: str) -> None:
    # PgBouncer keeps server connections to the database open: FORCE closes them
    from dalkit.testing.postgres import drop_database

    drop_database(server.url, name)
