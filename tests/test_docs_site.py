"""The documentation site (``mkdocs.yml``) builds with ``mkdocs build --strict``.

Strict mode turns every warning into an error: a broken link or anchor between the pages, an
unresolved cross-reference, a docstring that mkdocstrings cannot render. The build runs in a
subprocess from the repository root; the test is skipped where the ``docs`` extra
(``pip install -e ".[docs]"``) is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _require_docs_extra() -> None:
    for name in DOCS_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            found = False
        if not found:
            pytest.skip(f"{name} is not installed (pip install -e '.[docs]')")


def test_site_builds_strict_and_documents_the_server(tmp_path: Path) -> None:
    _require_docs_extra()
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    server_page = (site / "api" / "server" / "index.html").read_text(encoding="utf-8")
    assert "RoundEngine" in server_page
    assert 'id="velocity.server.RoundEngine"' in server_page
