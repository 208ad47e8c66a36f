"""Shared fixtures live in tests/fixtures/<area>.py, one module per area, all loaded here."""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)
