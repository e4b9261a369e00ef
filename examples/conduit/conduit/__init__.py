"""Conduit: the RealWorld example backend (https://realworld-docs.netlify.app) on FastAPI and
dalkit. ``conduit.app:app`` is the ASGI application; :func:`conduit.app.create_app` builds one
for a given database."""
