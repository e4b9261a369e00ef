"""Conduit's users, authentication and profiles through the API, with the spec's statuses
and error bodies."""

from __future__ import annotations

import httpx
import jwt

from .conftest import register


async def test_registration_returns_the_user_with_a_token(api: httpx.AsyncClient) -> None:
    body = {"user": {"username": "jake", "email": "jake@jake.jake", "password": "jakejake"}}
    response = await api.post("/api/users", json=body)
    assert response.status_code == 201
    user = response.json()["user"]
    assert set(user) == {"email", "token", "username", "bio", "image"}
    assert (user["email"], user["username"], user["bio"], user["image"]) == (
        "jake@jake.jake",
        "jake",
        "",
        None,
    )
    assert (
        jwt.decode(user["token"], "test-secret-of-thirty-two-bytes!", algorithms=["HS256"])[
            "username"
        ]
        == "jake"
    )
    assert "jakejake" not in response.text


async def test_registration_errors_use_the_spec_error_body(api: httpx.AsyncClient) -> None:
    await register(api, "jake")
    empty = await api.post("/api/users", json={"user": {"username": "", "email": "x@y.z"}})
    assert empty.status_code == 422
    assert empty.json() == {"errors": {"body": ["username can't be empty", "password is missing"]}}
    bad_email = {"user": {"username": "x", "email": "nope", "password": "p"}}
    invalid = await api.post("/api/users", json=bad_email)
    assert invalid.json() == {"errors": {"body": ["email is invalid"]}}
    duplicate = {"user": {"username": "jake", "email": "jake@example.com", "password": "p"}}
    taken = await api.post("/api/users", json=duplicate)
    assert taken.status_code == 422
    assert taken.json() == {
        "errors": {"body": ["username has already been taken; email has already been taken"]}
    }


async def test_login_checks_the_password(api: httpx.AsyncClient) -> None:
    await register(api, "ann")
    good = {"user": {"email": "ann@example.com", "password": "pw-ann"}}
    response = await api.post("/api/users/login", json=good)
    assert response.status_code == 200
    assert response.json()["user"]["username"] == "ann"
    bad = {"user": {"email": "ann@example.com", "password": "wrong"}}
    refused = await api.post("/api/users/login", json=bad)
    assert refused.status_code == 401
    assert refused.json() == {"errors": {"body": ["email or password is invalid"]}}


async def test_the_current_user_needs_a_valid_token(api: httpx.AsyncClient) -> None:
    auth = await register(api, "bo")
    me = await api.get("/api/user", headers=auth)
    assert me.status_code == 200
    assert me.json()["user"]["username"] == "bo"
    assert (await api.get("/api/user")).status_code == 401
    forged = jwt.encode(
        {"sub": "1", "exp": 9999999999}, "not-the-secret-but-just-as-long!", algorithm="HS256"
    )
    refused = await api.get("/api/user", headers={"Authorization": f"Token {forged}"})
    assert refused.status_code == 401
    assert refused.json() == {"errors": {"body": ["the token is invalid or has expired"]}}
    bearer = await api.get("/api/user", headers={"Authorization": "Bearer x"})
    assert bearer.status_code == 401


async def test_updating_the_user_changes_what_login_accepts(api: httpx.AsyncClient) -> None:
    auth = await register(api, "cy")
    changes = {"user": {"bio": "I like to skateboard", "password": "new-pw", "image": "i.png"}}
    updated = await api.put("/api/user", json=changes, headers=auth)
    assert updated.status_code == 200
    assert updated.json()["user"]["bio"] == "I like to skateboard"
    assert updated.json()["user"]["image"] == "i.png"
    login = {"user": {"email": "cy@example.com", "password": "new-pw"}}
    assert (await api.post("/api/users/login", json=login)).status_code == 200
    await register(api, "dee")
    clash = await api.put("/api/user", json={"user": {"username": "dee"}}, headers=auth)
    assert clash.status_code == 422


async def test_profiles_and_follows(api: httpx.AsyncClient) -> None:
    ann = await register(api, "ann")
    await register(api, "bob")
    anonymous = await api.get("/api/profiles/bob")
    assert anonymous.json() == {
        "profile": {"username": "bob", "bio": "", "image": None, "following": False}
    }
    followed = await api.post("/api/profiles/bob/follow", headers=ann)
    assert followed.status_code == 200
    assert followed.json()["profile"]["following"] is True
    assert (await api.get("/api/profiles/bob", headers=ann)).json()["profile"]["following"]
    unfollowed = await api.delete("/api/profiles/bob/follow", headers=ann)
    assert unfollowed.json()["profile"]["following"] is False
    missing = await api.get("/api/profiles/nobody")
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"body": ["profile not found"]}}
    assert (await api.post("/api/profiles/bob/follow")).status_code == 401
    assert (await api.post("/api/profiles/ann/follow", headers=ann)).status_code == 422
