"""``velocity new``: the generated project installs nothing, runs offline and its tests pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import velocity
from velocity import cli
from velocity.errors import ConfigurationError
from velocity.experiments.scaffold import create_project, package_name, project_files

SRC = Path(__file__).resolve().parents[1] / "src"
FILES = [
    ".gitignore",
    "README.md",
    "config.yaml",
    "my_fl/__init__.py",
    "my_fl/data.py",
    "my_fl/model.py",
    "my_fl/run.py",
    "pyproject.toml",
    "tests/test_project.py",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("projects")
    assert cli.main(["new", "my-fl", "--dir", str(where)]) == cli.EXIT_OK
    return where / "my-fl"


def test_new_writes_the_skeleton(project: Path) -> None:
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*")) == sorted(
        {*FILES, "my_fl", "tests"}
    )
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["name"] == "my-fl"
    assert meta["project"]["dependencies"] == [f"velocityfl>={velocity.__version__}"]
    assert meta["tool"]["setuptools"]["packages"] == ["my_fl"]
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert "python -m my_fl.run" in readme
    assert "velocity run --config config.yaml" in readme
    for path in project.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
        assert "__PACKAGE__" not in path.read_text(encoding="utf-8")


def test_new_prints_the_files_and_next_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["new", "demo", "--dir", str(tmp_path)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"created {tmp_path / 'demo'} (9 files):\n")
    assert "  demo/run.py\n" in out
    assert "python -m demo.run" in out


def test_generated_tests_pass(project: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(project), str(SRC), env.get("PYTHONPATH")) if p
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "3 passed" in out.stdout


def test_generated_code_is_lint_clean(project: Path) -> None:
    beside = Path(sys.executable).with_name("ruff")
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    common = ["--isolated", "--no-cache", "--line-length", "100"]
    for command in (
        [ruff, "check", *common, "--select", "E,F,W,I,B,UP,SIM,RUF", "."],
        [ruff, "format", *common, "--check", "."],
    ):
        out = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_generated_config_is_valid(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate-config", str(project / "config.yaml")]) == cli.EXIT_OK
    assert capsys.readouterr().out.startswith("valid: my-fl (")


def test_an_empty_existing_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    root = create_project("empty", tmp_path)
    assert root == tmp_path / "empty"
    assert (root / "empty" / "run.py").is_file()


def test_a_non_empty_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine", encoding="utf-8")
    assert cli.main(["new", "taken", "--dir", str(tmp_path)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("velocity: configuration error: cannot create project 'taken'")
    assert "already exists and is not empty" in err
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="exists"):
        create_project("file", tmp_path)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "invalid project name"),
        ("2fast", "a letter first"),
        ("my project", "a letter first"),
        ("my.project", "a letter first"),
        ("../escape", "a letter first"),
        ("x" * 65, "1-64 characters"),
        ("class", "a Python keyword"),
        ("json", "the module 'json'"),
        ("Velocity", "the module 'velocity'"),
        ("torch", "the module 'torch'"),
        ("tests", "the module 'tests'"),
    ],
)
def test_bad_names_are_configuration_errors(
    name: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigurationError, match="invalid project name") as error:
        create_project(name, tmp_path)
    assert reason in str(error.value)
    assert cli.main(["new", name, "--dir", str(tmp_path)]) == cli.EXIT_CONFIG
    assert capsys.readouterr().err.startswith("velocity: configuration error: invalid project")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "package"), [("demo", "demo"), ("My-Project", "my_project"), ("a_b-c2", "a_b_c2")]
)
def test_package_name(name: str, package: str) -> None:
    assert package_name(name) == package
    assert f"{package}/run.py" in project_files(name)
