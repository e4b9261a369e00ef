"""Tests of the documentation site: its snippets and its API reference."""
