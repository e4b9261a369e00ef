"""Every ```python block of docs/**/*.md and README.md, run on its own with pytest-examples.

Each block runs in a fresh namespace with an empty temporary directory as the current one; what
it prints must match its ``#>`` comments. ``test="skip"`` blocks must still parse;
``test="postgres"`` blocks run against a brand-new PostgreSQL database named by
``DALKIT_DATABASE_URL``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_examples import CodeExample, EvalExample, find_examples

ROOT = Path(__file__).resolve().parents[2]
MODES = ("run", "skip", "postgres")


def markdown_files() -> list[Path]:
    return [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]


def python_blocks() -> Iterator[CodeExample]:
    for path in markdown_files():
        for example in find_examples(path):
            # pytest-examples takes any "py..." prefix: the convention tags blocks ```python
            if example.prefix.split(" ", 1)[0] == "python":
                yield example


def mode(example: CodeExample) -> str:
    return example.prefix_settings().get("test", "run")


def block_id(example: CodeExample) -> str:
    return f"{example.path.relative_to(ROOT)}:{example.start_line}"


BLOCKS = list(python_blocks())
RUN = [
    pytest.param(e, id=block_id(e), marks=[pytest.mark.postgres] if mode(e) == "postgres" else [])
    for e in BLOCKS
    if mode(e) in ("run", "postgres")
]
SKIPPED = [pytest.param(e, id=block_id(e)) for e in BLOCKS if mode(e) == "skip"]


def test_every_block_has_a_known_test_setting() -> None:
    unknown = [block_id(e) for e in BLOCKS if mode(e) not in MODES]
    assert unknown == [], f"test= must be one of {MODES}"


@pytest.mark.parametrize("example", RUN)
def test_block_runs(
    example: CodeExample,
    eval_example: EvalExample,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    workdir = tmp_path / "cwd"  # pytest-examples writes the block's module into tmp_path
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("DALKIT_DATABASE_URL", raising=False)
    if mode(example) == "postgres":
        url = request.getfixturevalue("postgres_database_url")
        monkeypatch.setenv("DALKIT_DATABASE_URL", url)
    eval_example.set_config(line_length=100)  # the project's line length (pyproject.toml)
    failure = None
    try:
        eval_example.run_print_check(example)
    except Exception as error:
        # pytest-examples points the traceback into the Markdown file, which Python 3.11's
        # traceback module cannot render (an INTERNALERROR): report the lines ourselves, and
        # outside the except block so that the error is not chained to the failure
        failure = f"{block_id(example)} raised\n{describe(error)}"
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def describe(error: BaseException) -> str:
    """The error and the file:line of each frame, without reading code positions."""
    lines = []
    tb = error.__traceback__
    while tb is not None:
        lines.append(f"  {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}")
        tb = tb.tb_next
    cause = error.__cause__ or error.__context__
    chained = f"\ncaused by {type(cause).__name__}: {cause}" if cause is not None else ""
    return "\n".join([*lines, f"{type(error).__name__}: {error}{chained}"])


@pytest.mark.parametrize("example", SKIPPED)
def test_skipped_block_is_still_python(example: CodeExample) -> None:
    ast.parse(example.source, filename=block_id(example))
