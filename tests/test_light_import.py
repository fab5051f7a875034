"""``import velocity`` and ``velocity --help`` are light: no torch, no environment variables.

Every check that looks at ``sys.modules`` or ``os.environ`` runs in a fresh interpreter
(``sys.executable``), since this test process has long imported torch.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import velocity

SRC = Path(__file__).resolve().parents[1] / "src"
THP = "THP_MEM_ALLOC_ENABLE"
#: Modules that pull in torch (or are slow), none of which a light import may load.
HEAVY = ("torch", "numpy", "velocity.kernels", "velocity.strategies", "velocity.server")
#: Every command and sub-command whose ``--help`` must stay light.
HELP_ARGVS = [
    [],
    ["run"],
    ["validate-config"],
    ["schema"],
    ["new"],
    ["strategies"],
    ["attacks"],
    ["backends"],
    ["bench"],
    ["bench", "robustness"],
    ["version"],
]


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without THP_MEM_ALLOC_ENABLE, with ``src`` importable."""
    env = {k: v for k, v in os.environ.items() if k != THP}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _python(
    code: str, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=_env() if env is None else env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _loaded(stdout: str) -> list[str]:
    return [name for name in stdout.split() if name]


def test_import_velocity_does_not_import_torch() -> None:
    out = _python(
        f"""
        import sys
        import velocity
        print(*[m for m in {HEAVY!r} if m in sys.modules])
        """
    )
    assert _loaded(out.stdout) == []


def test_import_velocity_sets_no_environment_variables() -> None:
    env = _env()
    assert THP not in env
    out = _python(
        """
        import os
        before = dict(os.environ)
        import velocity
        print("THP" if "THP_MEM_ALLOC_ENABLE" in os.environ else "")
        print("changed" if dict(os.environ) != before else "")
        """,
        env=env,
    )
    assert _loaded(out.stdout) == []


def test_importtime_names_no_torch_module() -> None:
    # The measurement of the issue: `python -X importtime -c "import velocity"`.
    out = _python("import velocity", "-X", "importtime")
    modules = [
        line.rsplit("|", 1)[-1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "velocity" in modules
    assert [m for m in modules if m == "torch" or m.startswith("torch.")] == []


def test_help_does_not_import_torch() -> None:
    out = _python(
        f"""
        import sys
        from velocity import cli
        for argv in {HELP_ARGVS!r}:
            try:
                code = cli.main([*argv, "--help"])
            except SystemExit as exit_:  # main returns the code, but be safe
                code = exit_.code
            assert code == 0, (argv, code)
        print(*[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
        """
    )
    assert "usage: velocity run" in out.stdout
    assert _loaded(out.stderr) == []


def test_version_flag_does_not_import_torch() -> None:
    out = _python(
        f"""
        import sys
        from velocity import cli
        for argv in (["--version"], ["run", "--version"]):
            assert cli.main(argv) == 0, argv
        print(*[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
        """
    )
    assert out.stdout.splitlines() == [f"velocityfl {velocity.__version__}"] * 2
    assert _loaded(out.stderr) == []


def test_cli_sets_huge_pages_unless_set() -> None:
    code = """
        import os
        from velocity import cli
        assert cli.main(["--help"]) == 0
        print("THP=" + os.environ.get("THP_MEM_ALLOC_ENABLE", "<unset>"))
        """
    assert "THP=1" in _python(code).stdout.splitlines()
    assert "THP=0" in _python(code, env=_env(**{THP: "0"})).stdout.splitlines()


def test_lazy_export_imports_on_first_access() -> None:
    out = _python(
        """
        import sys
        import velocity
        assert "torch" not in sys.modules
        krum = velocity.Krum
        assert "torch" in sys.modules
        import velocity.strategies
        assert krum is velocity.strategies.Krum
        assert vars(velocity)["Krum"] is krum  # cached: __getattr__ runs once per name
        from velocity import FedAvg, kernels
        assert FedAvg is velocity.strategies.FedAvg
        assert kernels is sys.modules["velocity.kernels"]
        print("ok")
        """
    )
    assert out.stdout.split() == ["ok"]


@pytest.mark.parametrize("name", velocity.__all__)
def test_every_export_resolves(name: str) -> None:
    assert getattr(velocity, name) is not None
    assert name in dir(velocity)


def test_export_table_matches_all() -> None:
    eager = {"__version__", *(n for n in velocity.__all__ if n.endswith("Error"))}
    lazy = set(velocity._LAZY_EXPORTS)
    assert lazy.isdisjoint(eager)
    assert set(velocity.__all__) == lazy | eager
    assert len(set(velocity.__all__)) == len(velocity.__all__)
    for name, module_name in velocity._LAZY_EXPORTS.items():
        module = importlib.import_module(module_name)
        expected = module if module_name == f"velocity.{name}" else getattr(module, name)
        assert getattr(velocity, name) is expected, name


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = velocity.no_such_name
    assert not hasattr(velocity, "no_such_name")
