"""``dalkit inspect``: plans, tables, index advice and queries, as tables or JSON, with exit
codes CI can gate on."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner, Result

from dalkit import Database, DatabaseError
from dalkit.cli import app
from dalkit.observe.prometheus import register, start_http_server

from . import models, workload
from .models import Base, seed_rows


@pytest.fixture(autouse=True)
def _no_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DALKIT_DATABASE_URL", raising=False)


@pytest.fixture
def url(sqlite_url: str) -> str:
    db = Database(sqlite_url)
    try:
        db.create_all(Base.metadata)
        with db.session() as session:
            session.add_all(seed_rows())
    finally:
        db.dispose()
    return sqlite_url


def invoke(*args: str) -> Result:
    # wide enough that Rich wraps no cell
    return CliRunner().invoke(app, ["inspect", *args], env={"COLUMNS": "300"})


def test_explain_exits_1_on_a_warning_and_0_without(url: str) -> None:
    scan = invoke("explain", "SELECT * FROM obs_posts WHERE title = :t", "-p", "t=x", "--url", url)
    assert scan.exit_code == 1, scan.output
    assert "SCAN obs_posts" in scan.output
    assert "full_scan" in scan.output
    lookup = invoke(
        "explain",
        "SELECT * FROM obs_posts WHERE id = :id",
        "--param",
        "id=3",
        "--url",
        url,
        "--json",
    )
    assert lookup.exit_code == 0, lookup.output
    document = json.loads(lookup.output)
    assert document["warnings"] == []
    assert "SEARCH obs_posts" in document["text"]


def test_explain_of_a_statement_without_plan_steps_says_so(url: str) -> None:
    # SQLite's EXPLAIN QUERY PLAN of an INSERT ... VALUES has no row: a blank line was printed
    result = invoke(
        "explain", "INSERT INTO obs_posts (id) VALUES (:id)", "-p", "id=99", "--url", url
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "(the database gave no plan steps for this statement)"


def test_explain_a_repository_read_with_its_filters(url: str) -> None:
    posts = f"{models.__name__}:Posts"
    args = ("--url", url, "--json")
    scan = invoke("explain", "--repository", posts, "-p", "title=post 1.1", "--sort", "-id", *args)
    assert scan.exit_code == 1, scan.output
    assert "SCAN obs_posts" in json.loads(scan.output)["text"]
    lookup = invoke("explain", "--repository", posts, "-p", "author_id=2", "--limit", "5", *args)
    assert lookup.exit_code == 0, lookup.output
    assert "ix_obs_posts_author_id" in json.loads(lookup.output)["text"]
    refused = invoke("explain", "--repository", posts, "-p", "nope=1", "--url", url)
    assert refused.exit_code == 2
    assert "InvalidFilterError" in refused.output
    neither = invoke("explain", "--url", url)
    assert neither.exit_code == 2
    assert "either SQL or --repository" in neither.output


def test_tables_as_json(url: str) -> None:
    result = invoke("tables", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    rows = {row["table"]: row for row in json.loads(result.output)}
    assert rows["obs_posts"]["rows"] == 10
    assert rows["obs_posts"]["indexes"] == ["ix_obs_posts_author_id"]
    assert "obs_authors" in invoke("tables", "--url", url).output


def test_indexes_exit_1_when_advice_warns(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        db.sql("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        db.sql("CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p (id))")
    finally:
        db.dispose()
    result = invoke("indexes", "--url", sqlite_url)
    assert result.exit_code == 1, result.output
    assert "missing_fk_index" in result.output
    advice = json.loads(invoke("indexes", "--url", sqlite_url, "--json").output)
    assert [a["ddl"] for a in advice] == ["CREATE INDEX ix_c_p_id ON c (p_id)"]


def test_indexes_exit_0_on_a_clean_schema(url: str) -> None:
    result = invoke("indexes", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []


def test_queries_from_a_one_off_run(url: str) -> None:
    result = invoke("queries", "--run", f"{workload.__name__}:run", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    (stat,) = [s for s in json.loads(result.output) if "obs_posts" in s["statement"]]
    assert stat["count"] == 3
    assert stat["statement"] == "SELECT count(*) FROM obs_posts WHERE id > ?"


def test_a_negative_top_is_a_usage_error(url: str) -> None:
    result = invoke("queries", "--run", f"{workload.__name__}:run", "--url", url, "--top", "-1")
    assert result.exit_code == 2
    assert "--top" in result.output


def test_queries_run_a_function_of_the_project_in_the_current_directory(
    url: str, project_module: Callable[[str], str]
) -> None:
    name = project_module("def nightly(db):\n    db.sql('SELECT count(*) FROM obs_posts')\n")
    result = invoke("queries", "--run", f"{name}:nightly", "--url", url, "--json")
    assert result.exit_code == 0, result.output
    assert any("obs_posts" in s["statement"] for s in json.loads(result.output))


# an async function was called and never awaited: nothing ran, "no queries", exit code 0;
# it is awaited with an AsyncDatabase now
@pytest.mark.parametrize(("define", "wait"), [("def", ""), ("async def", "await ")])
def test_a_run_that_fails_still_shows_what_it_ran(
    url: str, project_module: Callable[[str], str], define: str, wait: str
) -> None:
    name = project_module(
        f"{define} nightly(db):\n"
        f"    {wait}db.sql('SELECT count(*) FROM obs_posts')\n"
        f"    {wait}db.sql('SELECT no_such_column FROM obs_posts')\n"
    )
    result = invoke("queries", "--run", f"{name}:nightly", "--url", url, "--json")
    assert result.exit_code == 2
    shown = json.loads(result.stdout)
    (failed,) = [s for s in shown if "no_such_column" in s["statement"]]
    assert (failed["count"], failed["errors"]) == (0, 1)
    assert any(s["count"] == 1 and "count(*)" in s["statement"] for s in shown)
    assert "DatabaseError" in result.stderr


def test_queries_from_a_metrics_endpoint(url: str) -> None:
    registry = CollectorRegistry()
    db = Database(url)
    register(db, "app", registry=registry)
    server, thread = start_http_server(0, registry=registry)
    try:
        workload.run(db)
        with pytest.raises(DatabaseError):
            db.sql("SELEC 1")  # a failed statement: counted as an error of its operation
        port = server.server_address[1]
        result = invoke("queries", "--metrics-url", f"http://127.0.0.1:{port}/metrics", "--json")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        db.dispose()
    assert result.exit_code == 0, result.output
    rows = {r["operation"]: r for r in json.loads(result.output)}
    assert (rows["SELECT"]["database"], rows["SELECT"]["count"]) == ("app", 3)
    assert (rows["SELECT"]["errors"], rows["OTHER"]["count"], rows["OTHER"]["errors"]) == (0, 0, 1)


class _Exposition(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` to requests with the Basic credentials ``scraper:pa ss@word``; a body
    that is no HTTP response is sent raw."""

    body = b""

    def do_GET(self) -> None:
        if not self.body.startswith(b"# "):
            self.wfile.write(self.body)
            return
        expected = "Basic " + base64.b64encode(b"scraper:pa ss@word").decode()
        ok = self.headers.get("Authorization") == expected
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(self.body if ok else b"")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _metrics_server(body: bytes) -> Iterator[int]:
    handler = type("Handler", (_Exposition,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_metrics_url_credentials_are_sent_as_basic_auth_and_never_printed(url: str) -> None:
    registry = CollectorRegistry()
    db = Database(url)
    try:
        register(db, "app", registry=registry)
        workload.run(db)
        body = generate_latest(registry)
    finally:
        db.dispose()
    with _metrics_server(body) as port:
        served = invoke(
            "queries",
            "--metrics-url",
            f"http://scraper:pa%20ss%40word@127.0.0.1:{port}/m",
            "--json",
        )
        refused = invoke("queries", "--metrics-url", f"http://scraper:wrong-pw@127.0.0.1:{port}/m")
    assert served.exit_code == 0, served.output
    (row,) = json.loads(served.output)
    assert (row["database"], row["operation"], row["count"]) == ("app", "SELECT", 3)
    assert refused.exit_code == 2
    assert f"cannot read http://127.0.0.1:{port}/m: HTTP Error 401" in refused.output
    assert "wrong-pw" not in refused.output


class _Redirect(http.server.BaseHTTPRequestHandler):
    """Redirects ``/m`` to ``location`` (``{port}``: the exposition server's), noting the
    credentials each request brought."""

    location: ClassVar[str] = ""
    seen: ClassVar[list[str | None]]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_metrics_url_credentials_follow_a_redirect_to_their_origin_only() -> None:
    # urllib copied the Authorization header into a redirect to any other host
    with _metrics_server(b"# HELP x\n") as port:
        seen: list[str | None] = []
        handler: type[_Redirect] = type("Handler", (_Redirect,), {"seen": seen})
        redirect = http.server.ThreadingHTTPServer(("localhost", 0), handler)
        thread = threading.Thread(target=redirect.serve_forever, daemon=True)
        thread.start()
        other = f"http://scraper:pa%20ss%40word@localhost:{redirect.server_address[1]}/m"
        try:
            handler.location = f"http://127.0.0.1:{port}/metrics"  # another host
            elsewhere = invoke("queries", "--metrics-url", other)
            handler.location = f"http://localhost:{redirect.server_address[1]}/m"  # its origin
            looping = invoke("queries", "--metrics-url", other)
        finally:
            redirect.shutdown()
            redirect.server_close()
            thread.join(5)
    assert elsewhere.exit_code == 2  # the other host refused the request without them
    assert "HTTP Error 401" in elsewhere.output
    assert looping.exit_code == 2  # urllib stops a redirect loop; each turn kept them
    assert len(seen) > 2
    assert all(auth is not None and auth.startswith("Basic ") for auth in seen)


@pytest.mark.parametrize("body", [b"garbage\r\n\r\n", b"# HELP\n<html>not metrics</html>\n"])
def test_a_metrics_url_answering_no_exposition_is_a_clear_error(body: bytes) -> None:
    with _metrics_server(body) as port:
        result = invoke(
            "queries", "--metrics-url", f"http://scraper:pa%20ss%40word@127.0.0.1:{port}/"
        )
    assert result.exit_code == 2
    assert f"cannot read http://127.0.0.1:{port}/: " in result.output
    assert "pa%20ss" not in result.output


def test_a_metrics_url_s_query_values_are_never_printed() -> None:
    # an endpoint authenticated by a query token: the error showed the token
    with _metrics_server(b"garbage\r\n\r\n") as port:
        result = invoke("queries", "--metrics-url", f"http://127.0.0.1:{port}/m?token=s3cret&x=")
    assert result.exit_code == 2
    assert f"cannot read http://127.0.0.1:{port}/m?token=***&x=***: " in result.output
    assert "s3cret" not in result.output


def test_a_metrics_url_with_a_bad_port_is_a_clear_error() -> None:
    result = invoke("queries", "--metrics-url", "http://scraper:s3cret-pw@127.0.0.1:nine/metrics")
    assert result.exit_code == 2
    assert "s3cret-pw" not in result.output


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    missing = invoke("tables", "--url", f"sqlite:///{tmp_path}/nope.db")
    assert missing.exit_code == 2
    assert f"no SQLite database file at {tmp_path}/nope.db (none was created)" in missing.output
    assert not (tmp_path / "nope.db").exists()
    assert invoke("tables").exit_code == 2
    assert invoke("queries").exit_code == 2
    assert (
        invoke("explain", "SELECT 1", "-p", "oops", "--url", f"sqlite:///{tmp_path}/x").exit_code
        == 2
    )


def test_a_sqlite_uri_is_read_as_by_the_other_commands(url: str, tmp_path: Path) -> None:
    # before, the file: URI was taken for a path, and refused as "no SQLite database at file:..."
    path = sa.make_url(url).database
    tables = invoke("tables", "--json", "--url", f"sqlite:///file:{path}?uri=true")
    assert tables.exit_code == 0, tables.output
    assert {"obs_authors", "obs_posts"} <= {row["table"] for row in json.loads(tables.output)}
    missing = invoke("tables", "--url", f"sqlite:///file:{tmp_path}/nope.db?uri=true")
    assert missing.exit_code == 2
    assert not (tmp_path / "nope.db").exists()


def test_a_password_is_never_printed() -> None:
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/app"
    result = invoke("tables", "--url", url)
    assert result.exit_code == 2
    assert "s3cret-pw" not in result.output


@pytest.mark.postgres
def test_a_postgres_plan_never_shows_a_secret_value(postgres_database_url: str) -> None:
    # PostgreSQL writes bound values into the plan: Filter: (password = 'hunter2'::text)
    with Database(postgres_database_url) as db:
        db.sql("CREATE TABLE logins (id serial PRIMARY KEY, password text, api_key bigint, n int)")
        with db.connection() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO logins (password, api_key, n) "
                    "SELECT 'pw' || g, g, g FROM generate_series(1, 20000) AS g"
                )
            )
            conn.execute(sa.text("ANALYZE logins"))
            conn.commit()
        sql = "SELECT * FROM logins WHERE password = :p AND api_key = :k AND n < :n"
        plan = db.explain(sql, {"p": "hunter2", "k": 987654321, "n": 12345})
    shown = [plan.text, json.dumps(plan.data), *(w.message for w in plan.warnings)]
    assert plan.has_warning("seq_scan")
    assert "password = '***'::text" in plan.text
    assert "12345" in plan.text  # a number for a column not named like a secret stays
    values = ("-p", "p=hunter2", "-p", "k=987654321", "-p", "n=12345")
    args = ("explain", sql, *values, "--url", postgres_database_url)
    for result in (invoke(*args), invoke(*args, "--json")):
        assert result.exit_code == 1, result.output  # the seq_scan warning
        assert "'***'::text" in result.output
        shown.append(result.output)
    for output in shown:
        assert "hunter2" not in output
        assert "987654321" not in output
