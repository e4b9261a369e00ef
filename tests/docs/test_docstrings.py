"""The public API's docstrings follow one convention (Google style), read from outside with griffe,
the parser mkdocstrings renders them with: each one exists, uses no reST role, documents
exactly the parameters its signature has, and says what a function returns.

The public API is every name in ``dalkit.__all__``, the names the reference pages place
(``::: dalkit.path``), ``dalkit.testing.__all__`` (a stable module the reference names), and the
public methods and properties of those classes, inherited ones included when a dalkit class
defines them (mkdocstrings renders a class's members; its base may be private).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

import griffe
import pytest

import dalkit
import dalkit.testing

ROOT = Path(__file__).resolve().parents[2]
REST_ROLE = re.compile(r":(meth|class|func|attr|mod|exc|data|obj):`")
_ENTRY = re.compile(r"^::: (dalkit(?:\.\w+)*)\s*$", re.MULTILINE)
UNDOCUMENTED_KINDS = frozenset(
    {griffe.ParameterKind.var_positional, griffe.ParameterKind.var_keyword}
)
Documented = griffe.Object | griffe.Alias
RETURNS = griffe.DocstringSectionKind.returns
# mixins whose methods a reader sees on a public class (Database, AbstractRepository...)
SPLIT_HALVES = frozenset(
    f"dalkit.{module}{suffix}.{prefix}{name}"
    for module, name in (
        ("database_observe", "DatabaseObserve"),
        ("database_transactions", "DatabaseTransactions"),
        ("repository.reads", "RepositoryReads"),
    )
    for suffix, prefix in (("", ""), ("_async", "Async"))
)
YIELDS = griffe.DocstringSectionKind.yields


@functools.cache
def package() -> griffe.Module:
    loaded = griffe.load(
        "dalkit",
        search_paths=[str(ROOT / "src")],
        docstring_parser="google",
        resolve_aliases=True,
        resolve_external=False,
    )
    assert isinstance(loaded, griffe.Module)
    return loaded


def public_paths() -> list[str]:
    reference = sorted((ROOT / "docs" / "reference").glob("*.md"))
    placed = [path for page in reference for path in _ENTRY.findall(page.read_text())]
    return sorted(
        {f"dalkit.{name}" for name in dalkit.__all__}
        | {f"dalkit.testing.{name}" for name in dalkit.testing.__all__}
        | set(placed)
    )


def resolve(path: str) -> Documented:
    found: Documented = package()
    for part in path.split(".")[1:]:
        found = found.members[part]
    return found.final_target if isinstance(found, griffe.Alias) else found


def is_dalkit(obj: Documented) -> bool:
    return obj.path.startswith("dalkit.")


def members(cls: griffe.Class) -> Iterator[Documented]:
    """Public methods and properties a reader sees on ``cls``, own and inherited from dalkit."""
    for name, found in cls.all_members.items():
        # an inherited member is an alias of the base class's own: followed for the halves
        # that split Database and the repositories into modules under the line cap
        member = found
        if isinstance(found, griffe.Alias) and found.target_path.rsplit(".", 1)[0] in SPLIT_HALVES:
            member = found.final_target
        if name.startswith("_") or isinstance(member, griffe.Alias) or not is_dalkit(member):
            continue
        if member.is_function or "property" in member.labels:
            yield member


@functools.cache
def documented_objects() -> dict[str, Documented]:
    objects: dict[str, Documented] = {}
    for path in public_paths():
        obj = resolve(path)
        objects[obj.path] = obj
        if isinstance(obj, griffe.Class):
            objects.update((member.path, member) for member in members(obj))
    return objects


def sections(obj: Documented) -> list[griffe.DocstringSection]:
    if obj.docstring is None:
        return []
    return obj.docstring.parse("google", warn_unknown_params=False)


def documented_parameters(obj: Documented, attributes: bool = False) -> list[str]:
    kinds = {griffe.DocstringSectionKind.parameters}
    if attributes:
        kinds.add(griffe.DocstringSectionKind.attributes)
    return [
        param.name.lstrip("*")
        for section in sections(obj)
        if section.kind in kinds
        for param in section.value
    ]


def signature(obj: Documented) -> tuple[list[str], list[str]]:
    """(every parameter name, those that must be documented) of a function or a class."""
    function = obj
    if isinstance(obj, griffe.Class):
        init = obj.members.get("__init__")
        if init is None:
            # an inherited constructor is documented where it is defined; a class that
            # documents its parameters anyway must name real ones
            inherited = obj.all_members.get("__init__")
            if isinstance(inherited, griffe.Function) and is_dalkit(inherited):
                return [param.name for param in inherited.parameters], []
            return [], []
        function = init
    if not isinstance(function, griffe.Function):
        return [], []
    names = [param.name for param in function.parameters]
    required = [
        param.name
        for param in function.parameters
        # a leading underscore marks a private field of a dataclass
        if param.name not in ("self", "cls")
        and not param.name.startswith("_")
        and param.kind not in UNDOCUMENTED_KINDS
    ]
    if "property" in function.labels:
        required = []
    return names, required


def problems(obj: Documented) -> list[str]:
    if obj.docstring is None:
        return ["no docstring"]
    found = []
    if REST_ROLE.search(obj.docstring.value):
        found.append("a reST role (use [`Name`][dalkit.Name] or `Name`)")
    names, required = signature(obj)
    documented = documented_parameters(obj)
    if isinstance(obj, griffe.Class) and "__init__" in obj.members:
        # merge_init_into_class: the constructor's Args may sit on the class or on __init__
        documented += documented_parameters(obj.members["__init__"])
    unknown = sorted(set(documented) - {name.lstrip("*") for name in names})
    if unknown and names:
        found.append(f"documents parameters it does not have: {unknown}")
    if isinstance(obj, griffe.Class):
        # a class may document its constructor's parameters as the attributes they become
        # (the fields of a dataclass are both)
        documented += documented_parameters(obj, attributes=True)
    undocumented = [name for name in required if name not in documented]
    if undocumented:
        found.append(f"Args: misses {undocumented}")
    if returns_value(obj) and not {RETURNS, YIELDS} & section_kinds(obj):
        found.append("no Returns: (or Yields:) for its return value")
    return found


def returns_value(obj: Documented) -> bool:
    """A function (not a property, constructor or dunder) annotated to return something."""
    if not isinstance(obj, griffe.Function) or "property" in obj.labels:
        return False
    return not obj.name.startswith("__") and str(obj.returns) not in ("None", "NoReturn")


def section_kinds(obj: Documented) -> set[griffe.DocstringSectionKind]:
    return {section.kind for section in sections(obj)}


def test_the_public_api_is_found() -> None:
    objects = documented_objects()
    assert len(objects) > 250
    assert "dalkit.repository.reads.RepositoryReads.count" in objects
    assert "dalkit.query.builder.QueryBuilder.where" in objects


def test_every_public_docstring_follows_the_google_convention() -> None:
    report = {path: found for path, obj in documented_objects().items() if (found := problems(obj))}
    assert report == {}


@pytest.mark.parametrize(
    "path",
    [
        "dalkit.database.Database",
        "dalkit.database_async.AsyncDatabase",
        "dalkit.database_transactions.DatabaseTransactions.transaction",
        "dalkit.database_transactions.DatabaseTransactions.run_transaction",
        "dalkit.database_transactions.DatabaseTransactions.transactional",
        "dalkit.query.builder.QueryBuilder",
        "dalkit.repository.sql.Repository",
        "dalkit.repository.sql_async.AsyncRepository",
        "dalkit.uow.unit.UnitOfWork",
        "dalkit.uow.unit_async.AsyncUnitOfWork",
        "dalkit.outbox.relay.OutboxRelay",
        "dalkit.outbox.relay_async.AsyncOutboxRelay",
        "dalkit.outbox.inbox_async.AsyncInbox",
        "dalkit.outbox.events.EventBus",
        "dalkit.transaction.retry.RetryPolicy",
        "dalkit.transaction.scope.on_commit",
        "dalkit.query.specs.Spec",
        "dalkit.query.tenant_context.tenant",
        "dalkit.testing.queries.count_queries",
        "dalkit.migrations.commands.Migrations",
        "dalkit.cache.query_cache.QueryCache",
        "dalkit.integrations.asgi.DatabaseMiddleware",
    ],
)
def test_the_main_entry_points_show_an_example(path: str) -> None:
    kinds = [section.kind for section in sections(documented_objects()[path])]
    assert griffe.DocstringSectionKind.examples in kinds


def test_the_convention_is_checked_where_it_can_fail() -> None:
    """The checks above are not vacuous: a docstring that breaks each rule is reported."""
    parent = package()["config.DatabaseConfig"]
    bad = griffe.Function(
        "bad",
        parameters=griffe.Parameters(
            griffe.Parameter("self"), griffe.Parameter("url"), griffe.Parameter("pool_size")
        ),
        returns="int",
        docstring=griffe.Docstring(
            "See :meth:`Database.session`.\n\nArgs:\n    url: The URL.\n    timeout: Seconds.\n"
        ),
    )
    bad.parent = parent
    assert problems(bad) == [
        "a reST role (use [`Name`][dalkit.Name] or `Name`)",
        "documents parameters it does not have: ['timeout']",
        "Args: misses ['pool_size']",
        "no Returns: (or Yields:) for its return value",
    ]
