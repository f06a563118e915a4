"""Loom's first-party plugins. Each module is registered through the ``loom`` entry-point group
in pyproject.toml, exactly as a third-party plugin would be, and depends on ``loom.core`` only."""
