"""Test-suite wiring: pytester lets the harness tests run the dalkit plugin in inner sessions."""

pytest_plugins = ("pytester",)
