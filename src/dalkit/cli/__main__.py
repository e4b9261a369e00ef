"""``python -m dalkit.cli``: the ``dalkit`` command, for environments without the console script."""

from dalkit.cli import main

main()
