"""The robustness grid: every attack against every defence, one short federated run per cell.

A grid file (``configs/grids/robustness.yaml``) names a base experiment (the ``velocity run``
schema, without ``strategy`` and ``attacks``), the share of Byzantine clients, the attacks
(label -> attack; ``null`` for the no-attack reference) and the defences (label -> strategy,
optionally restricted to some attacks). :func:`run_grid` runs each cell with the same seed,
data, partition and adversarial clients, and :func:`write_grid` writes ``results.csv``,
``results.md`` and ``heatmap.png`` (final test accuracy; a second panel with the backdoor
success rate when a backdoor is in the grid). See ``docs/robustness.md``.
"""

from __future__ import annotations

import csv
import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from velocity._validation import (
    INVALID,
    Constraint,
    Described,
    MappingOf,
    NoneOr,
    Real,
    String,
    TupleOf,
)
from velocity.errors import VelocityError
from velocity.experiments.config import (
    ExperimentConfig,
    InvalidConfigError,
    _loader,
    _show,
    parse_config,
)

__all__ = [
    "CellResult",
    "Defence",
    "GridConfig",
    "load_grid",
    "parse_grid",
    "run_grid",
    "write_grid",
]

_TOP_KEYS = ("name", "base", "byzantine_fraction", "attacks", "defences")

# The grid file's typed fields; problems read ``path: must be <description>; got <value>``
# (the experiment config's form). Cross-references (defence -> attack labels) and the
# attacks and strategies themselves are checked in :func:`parse_grid`.
_GRID: Final[Mapping[str, Constraint]] = {
    "name": String(min_length=1),
    "base": Described(MappingOf(), "an experiment mapping"),
    "byzantine_fraction": Described(
        Real(low=0.0, high=0.5, low_open=True, high_open=True), "in (0, 0.5)"
    ),
    "attacks": Described(
        MappingOf(min_length=1), "a non-empty mapping label -> attack (null for no attack)"
    ),
    "defences": Described(
        MappingOf(min_length=1),
        "a non-empty mapping label -> strategy (or {strategy, attacks})",
    ),
}
_ATTACK: Final = Described(MappingOf(), "a mapping with 'type'")
_ONLY: Final = Described(NoneOr(TupleOf()), "a list of attack labels")


@dataclass(frozen=True)
class Defence:
    """A row of the grid: a strategy, run against ``attacks`` (every attack when ``None``)."""

    label: str
    strategy: Any
    attacks: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GridConfig:
    """A validated grid: the base experiment, adversary share, attacks and defences."""

    name: str
    base: ExperimentConfig
    byzantine_fraction: float
    attacks: Mapping[str, Mapping[str, Any] | None]
    defences: tuple[Defence, ...]

    def cells(self) -> list[tuple[str, Defence]]:
        """``(attack label, defence)`` pairs in table order."""
        return [
            (attack, defence)
            for defence in self.defences
            for attack in self.attacks
            if defence.attacks is None or attack in defence.attacks
        ]

    def cell_config(self, attack: str, defence: Defence) -> ExperimentConfig:
        """The experiment of one cell."""
        spec = self.attacks[attack]
        attacks = [] if spec is None else [{**spec, "fraction": self.byzantine_fraction}]
        return self.base.with_updates(
            {"strategy": defence.strategy, "attacks": attacks, "name": self.name}
        )


@dataclass(frozen=True)
class CellResult:
    """What one cell of the grid measured."""

    attack: str
    defence: str
    final_accuracy: float | None
    best_accuracy: float | None
    final_loss: float | None
    backdoor_success_rate: float | None
    nonfinite_dropped: int
    collapsed: bool
    wall_time_s: float
    error: str | None = None


def parse_grid(data: object, *, source: str | None = None) -> GridConfig:
    """Validate a parsed grid file; every problem is reported with its dotted path."""
    from velocity.attacks import AttackSpec
    from velocity.strategies import parse_strategy

    if not isinstance(data, Mapping):
        raise InvalidConfigError(
            [f"the grid file must be a mapping; got {_show(data)}"], source=source
        )
    problems: list[str] = []
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(f"{key}: unknown key; valid keys: {', '.join(_TOP_KEYS)}")
    for key in ("name", "base", "attacks", "defences"):
        if key not in data:
            problems.append(f"{key}: required")
    if problems:
        raise InvalidConfigError(problems, source=source)

    def check(path: str, value: object, constraint: Constraint) -> Any:
        """``value`` converted by ``constraint``, or INVALID with the problem recorded."""
        converted = constraint.convert(value)
        if converted is INVALID:
            problems.append(f"{path}: must be {constraint.describe()}; got {_show(value)}")
        return converted

    name = check("name", data["name"], _GRID["name"])
    base_data = check("base", data["base"], _GRID["base"])
    base: ExperimentConfig | None = None
    if base_data is not INVALID:
        for key in ("strategy", "attacks", "name"):
            if key in base_data:
                problems.append(f"base.{key}: set by the grid; remove it from base")
        if not problems:
            try:
                base = parse_config({"name": name, **base_data})
            except InvalidConfigError as error:
                problems.extend(f"base.{p}" for p in error.problems)

    fraction = check(
        "byzantine_fraction", data.get("byzantine_fraction", 0.2), _GRID["byzantine_fraction"]
    )
    if fraction is INVALID:
        fraction = 0.2

    attacks: dict[str, Mapping[str, Any] | None] = {}
    raw_attacks = check("attacks", data["attacks"], _GRID["attacks"])
    if raw_attacks is INVALID:
        raw_attacks = {}
    for label, spec in raw_attacks.items():
        if spec is None:
            attacks[str(label)] = None
            continue
        if check(f"attacks.{label}", spec, _ATTACK) is INVALID:
            continue
        plan_keys = sorted(
            {"fraction", "clients", "per_round", "start_round", "end_round"} & set(spec)
        )
        if plan_keys:
            problems.append(
                f"attacks.{label}: the grid sets who attacks and when (the same clients "
                f"in every cell, every round); remove {', '.join(plan_keys)}"
            )
            continue
        try:
            AttackSpec.from_dict({**spec, "fraction": fraction})
        except ValueError as error:
            problems.append(f"attacks.{label}: {error}")
            continue
        attacks[str(label)] = dict(spec)

    defences: list[Defence] = []
    raw_defences = check("defences", data["defences"], _GRID["defences"])
    if raw_defences is INVALID:
        raw_defences = {}
    for label, spec in raw_defences.items():
        only: tuple[str, ...] | None = None
        strategy = spec
        if isinstance(spec, Mapping) and "strategy" in spec:  # {strategy, attacks} form
            extra = set(spec) - {"strategy", "attacks"}
            if extra:
                problems.append(
                    f"defences.{label}: unknown keys {sorted(extra)}; valid: strategy, attacks"
                )
                continue
            strategy = spec["strategy"]
            listed = check(f"defences.{label}.attacks", spec.get("attacks"), _ONLY)
            if listed is INVALID:
                continue
            if listed is not None:
                unknown = [a for a in listed if a not in raw_attacks]
                if unknown:
                    problems.append(
                        f"defences.{label}.attacks: unknown attack labels {unknown}; "
                        f"defined: {', '.join(map(str, raw_attacks))}"
                    )
                    continue
                only = tuple(str(a) for a in listed)
        try:
            parse_strategy(strategy)
        except ValueError as error:
            problems.append(f"defences.{label}: {error}")
            continue
        defences.append(Defence(str(label), strategy, only))

    if problems or base is None:
        raise InvalidConfigError(problems or ["base: invalid"], source=source)
    grid = GridConfig(
        name=name,
        base=base,
        byzantine_fraction=float(fraction),
        attacks=attacks,
        defences=tuple(defences),
    )
    from velocity.attacks import AttackPlan
    from velocity.sim.population import client_index

    for label, spec in attacks.items():
        if spec is None:
            continue
        try:  # the adversaries must exist in this federation (at least one client)
            AttackPlan(
                num_clients=base.training.num_clients,
                seed=base.seed,
                index_of=client_index,
                specs=[AttackSpec.from_dict({**spec, "fraction": grid.byzantine_fraction})],
            )
        except ValueError as error:
            problems.append(f"attacks.{label}: {error}")
    if problems:
        raise InvalidConfigError(problems, source=source)
    return grid


def load_grid(path: str | Path) -> GridConfig:
    """Read and validate a grid YAML file (same safe loader as experiment configs)."""
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidConfigError([f"cannot read grid file: {error}"]) from None
    try:
        data = yaml.load(text, Loader=_loader())
    except yaml.YAMLError as error:
        raise InvalidConfigError([f"invalid YAML: {error}"], source=source) from None
    return parse_grid(data, source=source)


def run_grid(
    grid: GridConfig,
    *,
    rounds: int | None = None,
    on_cell: Callable[[CellResult, int, int], None] | None = None,
) -> list[CellResult]:
    """Run every cell (same seed, data and adversaries) and return their results in order."""
    import torch

    from velocity.data import load_dataset
    from velocity.experiments.runner import build_simulation

    base = grid.base
    data = (
        load_dataset(base.dataset, split="train", data_dir=base.data_dir),
        load_dataset(base.dataset, split="test", data_dir=base.data_dir),
    )
    total = base.training.num_rounds if rounds is None else int(rounds)
    cells = grid.cells()
    results: list[CellResult] = []
    for i, (attack, defence) in enumerate(cells):
        start = time.perf_counter()
        config = grid.cell_config(attack, defence)
        federation = build_simulation(config, seed=config.seed, datasets=data)
        engine = federation.engine
        error: str | None = None
        try:
            engine.run(total)
        except VelocityError as exc:
            # e.g. every update non-finite once the model has diverged: the cell collapsed
            error = f"round {engine.round + 1}: {exc}"
        wall = time.perf_counter() - start
        finite = bool(torch.isfinite(engine.global_params).all())
        results.append(_cell(attack, defence.label, engine.results, wall, error, finite))
        # The engine's reference cycles would keep every finished cell's buffers alive
        # until a full collection; freeing them now keeps later cells as fast as the first.
        del federation, engine
        gc.collect()
        if on_cell is not None:
            on_cell(results[-1], i + 1, len(cells))
    return results


def _cell(
    attack: str,
    defence: str,
    records: Sequence[Any],
    wall: float,
    error: str | None = None,
    params_finite: bool = True,
) -> CellResult:
    """Summarise one cell; a cell whose model is non-finite or whose run failed collapsed
    (its final accuracy is then ``None``)."""
    accs = [r.global_accuracy for r in records if r.global_accuracy is not None]
    losses = [r.global_loss for r in records if r.global_loss is not None]
    asr = None
    dropped = 0
    for r in records:
        for a in r.attack_results:
            dropped += len(a.get("filtered", []))
            rate = a.get("metrics", {}).get("backdoor_success_rate")
            if rate is not None:
                asr = float(rate)
    final = accs[-1] if accs else None
    final_loss = losses[-1] if losses else None
    collapsed = (
        error is not None
        or not params_finite
        or final is None
        or not math.isfinite(final)
        or (final_loss is not None and not math.isfinite(final_loss))
    )
    if collapsed:
        final = None
    return CellResult(
        attack=attack,
        defence=defence,
        final_accuracy=final,
        best_accuracy=max(accs) if accs else None,
        final_loss=final_loss,
        backdoor_success_rate=asr,
        nonfinite_dropped=dropped,
        collapsed=bool(collapsed),
        wall_time_s=wall,
        error=error,
    )


def write_grid(grid: GridConfig, results: Sequence[CellResult], out: str | Path) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``heatmap.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "csv": out / "results.csv",
        "markdown": out / "results.md",
        "heatmap": out / "heatmap.png",
    }
    with files["csv"].open("w", newline="", encoding="utf-8") as fh:
        names = list(asdict(results[0]).keys()) if results else []
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))
    files["markdown"].write_text(markdown_table(grid, results), encoding="utf-8")
    _heatmap(grid, results, files["heatmap"])
    return files


def _grid_of(
    grid: GridConfig, results: Sequence[CellResult], value: Callable[[CellResult], float | None]
) -> tuple[list[str], list[str], list[list[float | None]]]:
    by = {(r.attack, r.defence): r for r in results}
    attacks = list(grid.attacks)
    defences = [d.label for d in grid.defences]
    table = [[value(by[(a, d)]) if (a, d) in by else None for a in attacks] for d in defences]
    return attacks, defences, table


def _pct(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "collapsed"
    return f"{100 * v:.1f}"


def markdown_table(grid: GridConfig, results: Sequence[CellResult]) -> str:
    """Final test accuracy (%) per defence (rows) and attack (columns), plus backdoor ASR."""
    base = grid.base
    attacks, defences, table = _grid_of(grid, results, lambda r: r.final_accuracy)
    lines = [
        f"# Robustness grid: {grid.name}",
        "",
        f"{base.dataset}, {base.model_id}, {base.training.num_clients} clients "
        f"({base.simulation.partitioning}, alpha={base.simulation.alpha}), "
        f"{100 * grid.byzantine_fraction:.0f}% Byzantine, {base.training.num_rounds} rounds, "
        f"seed {base.seed}. Final test accuracy (%); `—`: cell not run; `collapsed`: the "
        "model became non-finite or every update did; `‡`: the aggregator dropped the "
        "attackers' non-finite rows (said in each round's attack_results).",
        "",
        "| defence | " + " | ".join(attacks) + " |",
        "|---|" + "---|" * len(attacks),
    ]
    by = {(r.attack, r.defence): r for r in results}
    for d, row in zip(defences, table, strict=True):
        cells = []
        for a, v in zip(attacks, row, strict=True):
            r = by.get((a, d))
            text = "—" if r is None else _pct(v)
            if r is not None and r.nonfinite_dropped and not r.collapsed:
                text += " ‡"
            cells.append(text)
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    asr = [r for r in results if r.backdoor_success_rate is not None]
    if asr:
        lines += ["", "Backdoor attack success rate (%, lower is better):", ""]
        lines += ["| defence | " + " | ".join(sorted({r.attack for r in asr})) + " |"]
        lines += ["|---|" + "---|" * len({r.attack for r in asr})]
        for d in defences:
            found = [by.get((a, d)) for a in sorted({r.attack for r in asr})]
            lines.append(
                f"| {d} | "
                + " | ".join("—" if c is None else _pct(c.backdoor_success_rate) for c in found)
                + " |"
            )
    wall = sum(r.wall_time_s for r in results)
    lines += ["", f"{len(results)} cells, {wall / 60:.1f} min of training and evaluation.", ""]
    return "\n".join(lines)


def _heatmap(grid: GridConfig, results: Sequence[CellResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    accuracy_attacks = list(grid.attacks)
    asr_attacks = [
        a
        for a in grid.attacks
        if any(r.attack == a and r.backdoor_success_rate is not None for r in results)
    ]
    panels: list[tuple[str, list[str], Callable[[CellResult], float | None], str]] = [
        ("final test accuracy (%)", accuracy_attacks, lambda r: r.final_accuracy, "RdYlGn")
    ]
    if asr_attacks:
        panels.append(
            (
                "backdoor success rate (%)",
                asr_attacks,
                lambda r: r.backdoor_success_rate,
                "RdYlGn_r",
            )
        )
    width = 1.1 * sum(len(p[1]) for p in panels) + 3.5 * len(panels)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(width, 0.55 * len(grid.defences) + 2),
        gridspec_kw={"width_ratios": [len(p[1]) + 2 for p in panels]},
    )
    axes = np.atleast_1d(axes)
    by = {(r.attack, r.defence): r for r in results}
    defences = [d.label for d in grid.defences]
    for ax, (title, attacks, value, cmap) in zip(axes, panels, strict=True):
        arr = np.full((len(defences), len(attacks)), np.nan)
        for i, d in enumerate(defences):
            for j, a in enumerate(attacks):
                r = by.get((a, d))
                v = None if r is None else value(r)
                if v is not None and math.isfinite(v):
                    arr[i, j] = 100 * v
                elif r is not None and r.collapsed:
                    arr[i, j] = 0.0  # drawn as the worst colour, labelled below
        im = ax.imshow(arr, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(attacks)), attacks, rotation=35, ha="right")
        ax.set_yticks(range(len(defences)), defences)
        ax.set_title(title)
        for i, d in enumerate(defences):
            for j, a in enumerate(attacks):
                v = arr[i, j]
                r = by.get((a, d))
                if r is not None and r.collapsed:
                    text = "collapsed"
                else:
                    text = f"{v:.0f}" if math.isfinite(v) else ""
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{grid.name}: {100 * grid.byzantine_fraction:.0f}% Byzantine clients")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
