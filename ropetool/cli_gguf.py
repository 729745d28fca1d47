"""Click commands that read and edit existing GGUF files: inspect, set-rope, set, unset, diff.

Registered on the ``ropetool`` group defined in cli.py.
"""

from __future__ import annotations

from .cli import cli, rope_options  # noqa: F401
