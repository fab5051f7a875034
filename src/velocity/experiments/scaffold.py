"""``velocity new``: a project skeleton for a federation of your own model and data.

:func:`create_project` writes ``<directory>/<name>/``::

    README.md            how to install, run and test it
    pyproject.toml       a project that depends on velocityfl
    .gitignore
    config.yaml          a built-in experiment (logreg on synthetic data) for ``velocity run``
    <package>/__init__.py
    <package>/model.py   a custom torch.nn.Module
    <package>/data.py    a custom dataset: ArrayDataset train/test splits, generated offline
    <package>/run.py     the federation: build_engine + SequentialClients + Trainer, a few rounds
    tests/test_project.py  two rounds of the federation learn (beat chance, lower the loss)

``<package>`` is ``name`` in lower case with ``-`` as ``_``. The generated code uses the
library's public API only (``velocity.server.build_engine``, ``velocity.sim``,
``velocity.client``, ``velocity.data``), the wiring of
:func:`velocity.server.make_simulation`. This module imports neither torch nor the engine:
it only writes text.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     project = create_project("demo-fl", tmp)
...     sorted(p.relative_to(project).as_posix() for p in project.rglob("*.py"))
['demo_fl/__init__.py', 'demo_fl/data.py', 'demo_fl/model.py', 'demo_fl/run.py', 'tests/test_project.py']
>>> create_project("2fast", ".")
Traceback (most recent call last):
    ...
velocity.errors.ConfigurationError: invalid project name '2fast': use 1-64 characters, a letter first, then letters, digits, '_' or '-' (e.g. 'my-project')
"""  # noqa: E501

from __future__ import annotations

import keyword
import re
import sys
from pathlib import Path
from typing import Final

from velocity import __version__
from velocity.errors import ConfigurationError

__all__ = ["create_project", "package_name", "project_files"]

_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

#: Package names that would shadow what the project imports.
_RESERVED: Final = frozenset(
    {"velocity", "velocityfl", "torch", "numpy", "yaml", "pydantic", "pytest", "tests", "test"}
)


def package_name(name: str) -> str:
    """The Python package of project ``name``; raise :class:`ConfigurationError` if invalid.

    A project name is 1-64 characters: a letter, then letters, digits, ``_`` or ``-``. The
    package is the name in lower case with ``-`` as ``_``; it must not be a Python keyword,
    a standard-library module or a package the project imports (``velocity``, ``torch``, ...).

    >>> package_name("My-Project")
    'my_project'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid project name {name!r}: use 1-64 characters, a letter first, then "
            "letters, digits, '_' or '-' (e.g. 'my-project')"
        )
    package = name.lower().replace("-", "_")
    if keyword.iskeyword(package) or package in _RESERVED or package in sys.stdlib_module_names:
        raise ConfigurationError(
            f"invalid project name {name!r}: its package {package!r} would shadow "
            + ("a Python keyword" if keyword.iskeyword(package) else f"the module {package!r}")
            + "; choose another name"
        )
    return package


def project_files(name: str) -> dict[str, str]:
    """The files of project ``name``: relative POSIX path -> text (nothing is written)."""
    package = package_name(name)
    values = {"__NAME__": name, "__PACKAGE__": package, "__VERSION__": __version__}

    def fill(template: str) -> str:
        for key, value in values.items():
            template = template.replace(key, value)
        return template

    return {
        "README.md": fill(_README),
        "pyproject.toml": fill(_PYPROJECT),
        ".gitignore": _GITIGNORE,
        "config.yaml": fill(_CONFIG),
        f"{package}/__init__.py": fill(_INIT),
        f"{package}/model.py": fill(_MODEL),
        f"{package}/data.py": fill(_DATA),
        f"{package}/run.py": fill(_RUN),
        "tests/test_project.py": fill(_TESTS),
    }


def create_project(name: str, directory: str | Path = ".") -> Path:
    """Write the skeleton of project ``name`` to ``directory/name/`` and return that path.

    Raises
    ------
    ConfigurationError
        ``name`` is not a valid project name (see :func:`package_name`), or
        ``directory/name`` exists and is not an empty directory.
    """
    files = project_files(name)  # validates the name first
    root = Path(directory) / name
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise ConfigurationError(f"cannot create project {name!r}: {root} exists (a file)")
        if any(root.iterdir()):
            raise ConfigurationError(
                f"cannot create project {name!r}: {root} already exists and is not empty; "
                "choose another name or --dir"
            )
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# ---------------------------------------------------------------------- templates
# Placeholders: __NAME__ (the project), __PACKAGE__ (its package), __VERSION__ (velocityfl).

_README = """\
# __NAME__

A federated-learning project built on VelocityFL (`pip install velocityfl`):
your own model (`__PACKAGE__/model.py`) trained by simulated clients on your own data
(`__PACKAGE__/data.py`), wired together in `__PACKAGE__/run.py`.

## Install

```bash
pip install -e .            # installs velocityfl (and torch) too
```

## Run

```bash
python -m __PACKAGE__.run                  # 5 rounds of FedAvg over 10 clients
python -m __PACKAGE__.run --rounds 10 --clients 20 --seed 1
python -m pytest                           # the project's tests (two rounds must learn)
```

`run.py` prints the test loss and accuracy of the global model after every round.

## Change it

- `__PACKAGE__/model.py`: any `torch.nn.Module` whose output is `(batch, num_classes)` logits.
- `__PACKAGE__/data.py`: return your own `velocity.data.ArrayDataset` train and test splits
  (float features `x`, int64 labels `y`). The example generates Gaussian blobs so the project
  runs offline.
- `__PACKAGE__/run.py`: the strategy (`velocity strategies` lists them, e.g.
  `Krum(f=1)`), the partition (`iid`, `dirichlet`, `shard`), the local training
  (`TrainConfig`) and the fraction of clients per round.

## A built-in experiment

`config.yaml` describes an experiment of the library's own zoo (logistic regression on the
synthetic FedProx data, one client per synthetic device), run without any code:

```bash
velocity validate-config config.yaml
velocity run --config config.yaml          # writes outputs/__NAME__/ (metrics, plots, report)
```

For completion and checking of `config.yaml` in an editor, write the schema and name it in
the file's first line (VS Code: the YAML extension by Red Hat):

```bash
velocity schema --output velocity.schema.json
```

```yaml
# yaml-language-server: $schema=velocity.schema.json
```
"""

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "__NAME__"
version = "0.1.0"
description = "A federated-learning project built on VelocityFL."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["velocityfl>=__VERSION__"]

[project.optional-dependencies]
test = ["pytest>=8.0"]

[tool.setuptools]
packages = ["__PACKAGE__"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
"""

_GITIGNORE = """\
__pycache__/
*.egg-info/
outputs/
"""

_CONFIG = """\
# A built-in VelocityFL experiment: logistic regression on FedProx's Synthetic(1, 1) data,
# one client per synthetic device (generated, no download). Check it and run it with
#
#   velocity validate-config config.yaml
#   velocity run --config config.yaml
#
# Every field is described in VelocityFL's docs/configuration.md; for completion in an editor,
# see README.md (`velocity schema --output velocity.schema.json`).
name: __NAME__
seed: 0
dataset: synthetic
model_id: logreg
strategy: FedAvg

training:
  num_rounds: 10
  num_clients: 10
  client_fraction: 0.5

client:
  batch_size: 10
  local_epochs: 1
  lr: 0.01

simulation:
  partitioning: natural

output:
  dir: outputs
"""

_INIT = '''\
"""__NAME__: a federation of a custom model on a custom dataset, built on VelocityFL."""
'''

_MODEL = '''\
"""The model: any ``torch.nn.Module`` that maps a batch of features to class logits."""

from __future__ import annotations

import torch
from torch import nn


class Net(nn.Module):
    """A small multilayer perceptron: ``(batch, in_features)`` -> ``(batch, num_classes)``."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


def build_model(in_features: int, num_classes: int, *, seed: int = 0) -> Net:
    """A ``Net`` whose initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Net(in_features, num_classes)
'''

_DATA = '''\
"""The dataset: train and test splits as ``velocity.data.ArrayDataset`` s.

Replace :func:`load_data` with your own loader: ``x`` is a float tensor ``(N, ...)``, ``y`` an
int64 tensor ``(N,)`` of labels in ``[0, num_classes)``. This one generates Gaussian blobs
(one centre per class) so the project runs offline.
"""

from __future__ import annotations

import torch
from velocity.data import ArrayDataset


def load_data(
    *,
    num_samples: int = 2_000,
    num_features: int = 20,
    num_classes: int = 4,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[ArrayDataset, ArrayDataset]:
    """``(train, test)``: ``num_samples`` points around ``num_classes`` random centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, num_features, generator=generator)
    y = torch.randint(0, num_classes, (num_samples,), generator=generator)
    x = centres[y] + torch.randn(num_samples, num_features, generator=generator)
    num_test = max(1, int(num_samples * test_fraction))
    train = ArrayDataset("blobs", x[num_test:], y[num_test:], num_classes=num_classes)
    test = ArrayDataset("blobs", x[:num_test], y[:num_test], num_classes=num_classes)
    return train, test
'''

_RUN = '''\
"""The federation: the model of ``model.py`` trained by simulated clients on ``data.py``.

    python -m __PACKAGE__.run [--rounds N] [--clients K] [--seed S]

The wiring is the library's own (``velocity.server.make_simulation`` does the same for its
built-in models and datasets): partition the training set among clients, one ``Trainer`` for
local SGD, ``SequentialClients`` to run the clients in this process, and ``build_engine`` for
the round engine (client sampling, aggregation, evaluation).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from velocity.client import TrainConfig, Trainer
from velocity.data import partition
from velocity.server import RoundEngine, build_engine
from velocity.sim import ClientPopulation, SequentialClients, SimulationSettings
from velocity.strategies import FedAvg, Strategy

from __PACKAGE__.data import load_data
from __PACKAGE__.model import build_model


@dataclass(frozen=True)
class Federation:
    """The round engine, and the evaluation of a flat model on the test split."""

    engine: RoundEngine
    evaluate: Callable[[torch.Tensor], tuple[float, float]]
    num_classes: int


def build_federation(
    *,
    num_clients: int = 10,
    seed: int = 0,
    strategy: Strategy | None = None,
    train_config: TrainConfig | None = None,
    client_fraction: float = 0.5,
) -> Federation:
    """A federation of ``num_clients`` clients with label-skewed (Dirichlet) shares of the data."""
    train, test = load_data(seed=seed)
    shares = partition(train.y, num_clients, "dirichlet", alpha=1.0, seed=seed)
    population = ClientPopulation(shares.order, shares.offsets)

    model = build_model(int(train.x[0].numel()), train.num_classes, seed=seed)
    trainer = Trainer(model, train_config or TrainConfig(batch_size=16, local_epochs=1, lr=0.05))
    spec = trainer.spec

    def evaluate(params: torch.Tensor) -> tuple[float, float]:
        loss, accuracy = trainer.evaluate(params, test.x, test.y)
        return float(loss), float(accuracy)

    clients = SequentialClients(
        trainer, train.x, train.y, population, seed=seed, num_classes=train.num_classes
    )
    engine = build_engine(
        base=clients,
        spec=spec,
        init_params=spec.flatten(model.state_dict()),
        strategy=strategy or FedAvg(),
        settings=SimulationSettings(seed=seed, client_fraction=client_fraction),
        evaluate=evaluate,
    )
    return Federation(engine=engine, evaluate=evaluate, num_classes=train.num_classes)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the __NAME__ federation.")
    parser.add_argument("--rounds", type=int, default=5, help="rounds to run (default 5)")
    parser.add_argument("--clients", type=int, default=10, help="clients (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, model and sampling")
    args = parser.parse_args(argv)

    federation = build_federation(num_clients=args.clients, seed=args.seed)
    loss, accuracy = federation.evaluate(federation.engine.global_params)
    print(f"round 0: test loss {loss:.4f}, accuracy {accuracy:.1%}")
    for result in federation.engine.run(args.rounds):
        print(
            f"round {result.round}: test loss {result.global_loss:.4f}, "
            f"accuracy {result.global_accuracy:.1%} "
            f"({len(result.participated)} clients aggregated)"
        )


if __name__ == "__main__":
    main()
'''

_TESTS = '''\
"""The project's tests: the data is well formed and two rounds of the federation learn."""

from __future__ import annotations

import pytest

from __PACKAGE__.data import load_data
from __PACKAGE__.run import build_federation, main


def test_data_splits() -> None:
    train, test = load_data(seed=0)
    assert len(train) > len(test) > 0
    assert train.num_classes == test.num_classes
    assert train.x.shape[1:] == test.x.shape[1:]


def test_two_rounds_beat_chance_and_lower_the_loss() -> None:
    federation = build_federation(num_clients=5, seed=0)
    initial_loss, _ = federation.evaluate(federation.engine.global_params)
    results = federation.engine.run(2)
    last = results[-1]
    assert last.global_loss is not None and last.global_accuracy is not None
    assert last.global_loss < initial_loss
    assert last.global_accuracy > 1 / federation.num_classes + 0.2


def test_main_prints_every_round(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--rounds", "1", "--clients", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["round 0", "round 1"]
'''
