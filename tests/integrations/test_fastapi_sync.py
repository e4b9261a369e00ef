"""The FastAPI dependencies with a sync Database and sync endpoints (run in FastAPI's thread
pool): the session, repositories and a unit of work share the request's transaction, each
used by one thread at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy.orm import Session

from dalkit import Database, Repository, UnitOfWork
from dalkit.audit import current_actor, history
from dalkit.integrations.asgi import DatabaseMiddleware
from dalkit.integrations.fastapi import install_error_handlers, repository, session, unit_of_work

from .models import Base, Note


class NoteRepository(Repository[Note]):
    filterable = ("value",)


Notes = Annotated[NoteRepository, Depends(repository(NoteRepository))]


def build_app(db: Database) -> FastAPI:
    app = FastAPI()
    app.add_middleware(DatabaseMiddleware, db=db, actor=lambda scope: scope["state"].get("who"))
    install_error_handlers(app)

    @app.post("/notes", status_code=201)
    def add(
        value: str,
        notes: Notes,
        current: Annotated[Session, Depends(session)],
    ) -> dict[str, Any]:
        note = notes.add(Note(value=value))
        NoteRepository(current).add(Note(value=value + "-again"))
        if value == "refuse":
            raise HTTPException(409, "refused after writing")
        return {"id": note.id, "shared": notes.session is current}

    @app.post("/unit", status_code=201)
    def with_unit(
        value: str,
        unit: Annotated[UnitOfWork, Depends(unit_of_work(), scope="function")],
        current: Annotated[Session, Depends(session)],
    ) -> dict[str, Any]:
        unit.repository(NoteRepository).add(Note(value=value))
        if value == "refuse":
            raise HTTPException(409, "refused after writing")
        return {"shared": unit.session is current, "actor": current_actor()[0]}

    @app.post("/late-unit", status_code=201)
    def with_request_scoped_unit(
        value: str, unit: Annotated[UnitOfWork, Depends(unit_of_work(actor=lambda r: "ann"))]
    ) -> dict[str, Any]:
        unit.repository(NoteRepository).add(Note(value=value))
        return {"actor": current_actor()[0]}

    return app


@pytest.fixture
async def http(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    db.create_all(Base.metadata)
    transport = httpx.ASGITransport(app=build_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def values(db: Database) -> list[str]:
    with db.transaction() as current:
        return sorted(current.scalars(sa.select(Note.value)))


async def test_sync_dependencies_share_the_request_transaction(
    http: httpx.AsyncClient, db: Database
) -> None:
    response = await http.post("/notes", params={"value": "kept"})
    assert response.status_code == 201
    assert response.json()["shared"] is True
    assert values(db) == ["kept", "kept-again"]
    refused = await http.post("/notes", params={"value": "refuse"})
    assert refused.status_code == 409
    assert values(db) == ["kept", "kept-again"]
    assert db.pool_stats()["checked_out"] == 0


async def test_a_unit_of_work_dependency_works_in_a_sync_endpoint(
    http: httpx.AsyncClient, db: Database
) -> None:
    response = await http.post("/unit", params={"value": "by-unit"})
    assert response.status_code == 201
    assert response.json() == {"shared": True, "actor": None}
    refused = await http.post("/unit", params={"value": "refuse"})
    assert refused.status_code == 409
    late = await http.post("/late-unit", params={"value": "late"})
    assert late.status_code == 201
    assert late.json() == {"actor": "ann"}
    assert values(db) == ["by-unit", "late"]
    with db.transaction() as current:
        note_id = current.scalar(sa.select(Note.id).where(Note.value == "late"))
        trail = history(current, Note, note_id)
    assert [(entry.action, entry.actor_id) for entry in trail] == [("create", "ann")]
    assert db.pool_stats()["checked_out"] == 0
