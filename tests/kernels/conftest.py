"""Shared set-up for the ``velocity.kernels`` test suite.

The brute-force reference implementations live next to this file in ``reference.py``. Tests run
with ``--import-mode=importlib``, where test modules cannot import their siblings by name, so the
reference is loaded here once under the unique module name ``kernels_reference`` (a plain
``reference`` could collide with another test directory's helper of the same name).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_REFERENCE_NAME = "kernels_reference"


def _load_reference() -> None:
    if _REFERENCE_NAME in sys.modules:
        return
    path = Path(__file__).with_name("reference.py")
    spec = importlib.util.spec_from_file_location(_REFERENCE_NAME, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_REFERENCE_NAME] = module
    spec.loader.exec_module(module)


_load_reference()
