"""Test-wide settings.

Hypothesis explores new random examples on every local run (its database keeps what it finds).
CI runs on a fresh clone with no database, so a random search would make CI's verdict depend
on luck: with ``VELOCITY_CI=1`` (set by ``.ci/run``) the ``ci`` profile derandomizes the
search, so every CI run checks the same examples and a red CI is reproducible.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("VELOCITY_CI") == "1":
    settings.load_profile("ci")
