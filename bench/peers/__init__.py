"""The peers suite of ``make bench-peers``: dalkit's default way against SQLAlchemy ORM and
Core, Django, peewee, Tortoise, Piccolo, advanced-alchemy and the raw drivers, on one table.

Each peer is a module here exposing the same small interface (see ``base``); ``runner`` times
them, ``statements`` counts what they send, ``report`` writes the figures.
"""
