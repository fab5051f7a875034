"""The ``velocity`` command line.

::

    velocity run --config PATH [--output-dir DIR] [--rounds N] [--seed S] [--no-progress]
    velocity validate-config PATH   check a configuration file without running it
    velocity schema [--output PATH] the configuration's JSON Schema (editor completion)
    velocity new NAME [--dir DIR]   a new project: custom model and data, tests, a config
    velocity strategies [--json]    list every registered strategy stage
    velocity attacks [--json]       list every attack
    velocity backends [--json]      list every client backend (where simulated clients run)
    velocity audit verify RUN_DIR [--public-key HEX] [--require-signature]
                                    check a run's audit chain, signature and file digests
    velocity audit keygen PATH      a new Ed25519 signing key for governance.sign
    velocity audit erase RUN_DIR --client ID --reason TEXT [--signing-key PATH]
                                    erase a client's personal record; the chain stays valid
    velocity replay MANIFEST [--output-dir DIR]
                                    re-run a replay manifest, compare the model chain
    velocity fedtrain run --config PATH [--nodes N] [--seed S]
                                    a simulated DiLoCo run (the aumai-fedtrain surface)
    velocity fedtrain verify --update PATH --hash HEX
                                    check a LocalUpdate file against its SHA-256 hash
    velocity version                print the installed version
    velocity --version              print ``velocityfl VERSION`` and exit

The global options (``-v/--verbose``, ``--version``) are accepted before or after the command:
``velocity -v run ...`` and ``velocity run ... -v`` are the same.

Exit codes: ``0`` success, ``1`` runtime error, ``2`` usage or configuration error,
``130`` interrupted.
See ``docs/cli.md``. The module imports only the standard library at import time (and
``import velocity`` is light too); each command imports what it needs, so ``velocity --help``
and ``velocity COMMAND --help`` never import torch.

The command is an application and configures its own process: :func:`main` sets
``THP_MEM_ALLOC_ENABLE=1`` (transparent huge pages for PyTorch's large CPU tensors) unless it is
already set, before any command imports torch. ``THP_MEM_ALLOC_ENABLE=0 velocity ...`` opts
out. ``import velocity`` sets nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from velocity import __version__

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "build_parser",
    "main",
]

#: The command succeeded.
EXIT_OK = 0
#: A runtime failure (anything that is not a usage or configuration error).
EXIT_ERROR = 1
#: Bad command line (argparse's own code) or a :class:`velocity.errors.ConfigurationError`.
EXIT_CONFIG = 2
#: Interrupted by the user (Ctrl-C): 128 + SIGINT.
EXIT_INTERRUPTED = 130

_PROG = "velocity"
_DISTRIBUTION = "velocityfl"

#: Read by PyTorch's CPU allocator once, at its first large allocation: with ``1`` it backs large
#: tensors with transparent huge pages (first-touch page faults on a 400 MB update stack
#: otherwise cost ~100 ms). Being read once per process, it cannot be set per tensor.
_THP_ENV = "THP_MEM_ALLOC_ENABLE"


def _configure_process() -> None:
    """Process settings of the ``velocity`` application (the library itself sets none)."""
    os.environ.setdefault(_THP_ENV, "1")


# ---------------------------------------------------------------------- commands


def _format_parameters(parameters: Any) -> str:
    """Render a strategy's parameters (mapping, list or text) as one short line."""
    if parameters is None:
        return ""
    if isinstance(parameters, str):
        return parameters
    if isinstance(parameters, Mapping):
        return ", ".join(f"{name}={_format_default(value)}" for name, value in parameters.items())
    if isinstance(parameters, Sequence):
        parts = []
        for item in parameters:
            if isinstance(item, Mapping) and "name" in item:
                text = str(item["name"])
                if "default" in item and not item.get("required", False):
                    text += f"={_format_default(item['default'])}"
                parts.append(text)
            else:
                parts.append(str(item))
        return ", ".join(parts)
    return str(parameters)


def _format_default(value: Any) -> str:
    if isinstance(value, Mapping) and "default" in value:
        return _format_default(value["default"])
    return repr(value) if isinstance(value, str) else str(value)


def _json_default(value: object) -> object:
    """Fallback for ``json.dumps``: anything unusual becomes its string form."""
    return str(value)


def _print_catalogue(
    rows: list[dict[str, Any]], title: str, extra: tuple[str, str] | None, out: TextIO
) -> None:
    """A rich table of name, kind, [extra], parameters and summary."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    if extra is not None:
        table.add_column(extra[1], no_wrap=True)
    table.add_column("parameters")
    table.add_column("summary")
    for row in rows:
        cells = [str(row.get("name", "")), str(row.get("kind", ""))]
        if extra is not None:
            cells.append(str(row.get(extra[0], "")))
        cells += [
            _format_parameters(row.get("parameters")),
            str(row.get("summary", "")).replace("``", ""),
        ]
        table.add_row(*cells)
    # A pipe or a captured stream has no width; rich would assume 80 columns.
    wide = out.isatty() or "COLUMNS" in os.environ
    Console(file=out, width=None if wide else 160, soft_wrap=False).print(table)
    print("Parameters without a default are required.", file=out)


def _cmd_strategies(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.strategies import describe_strategies

    rows = list(describe_strategies())
    if args.json:
        out.write(json.dumps(rows, indent=2, default=_json_default) + "\n")
        return EXIT_OK
    _print_catalogue(rows, "VelocityFL strategies", None, out)
    return EXIT_OK


def _cmd_attacks(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.attacks import describe_attacks

    rows = describe_attacks()
    if args.json:
        out.write(json.dumps(rows, indent=2, default=_json_default) + "\n")
        return EXIT_OK
    _print_catalogue(rows, "VelocityFL attacks", ("omniscient", "omniscient"), out)
    return EXIT_OK


def _cmd_backends(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.sim.backends import BACKENDS

    rows = [{"name": b.name, "description": b.description} for b in BACKENDS.values()]
    if args.json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title="VelocityFL backends", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description")
    for row in rows:
        table.add_row(row["name"], row["description"])
    wide = out.isatty() or "COLUMNS" in os.environ
    Console(file=out, width=None if wide else 160, soft_wrap=False).print(table)
    print("Choose one with `backend: {type: NAME}` in a configuration.", file=out)
    return EXIT_OK


def _cmd_version(args: argparse.Namespace, out: TextIO) -> int:
    out.write(f"{_PROG} {_package_version()}\n")
    if args.verbose:
        import platform

        import numpy
        import torch

        out.write(f"python {platform.python_version()}\n")
        out.write(f"torch {torch.__version__}\n")
        out.write(f"numpy {numpy.__version__}\n")
    return EXIT_OK


def _cmd_validate_config(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.experiments.config import load_config

    config = load_config(args.path)  # InvalidConfigError -> exit 2, one line per problem
    out.write(f"valid: {config.name} ({config.config_hash()[:12]})\n")
    return EXIT_OK


#: The JSON Schema dialect pydantic writes.
_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _config_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment configuration file (``ExperimentConfig``).

    pydantic's schema, with a ``$schema`` dialect key, a title, and the fields that pydantic
    describes as "anything" (their validators are code) given their shape, so an editor can
    complete and check them: ``model_id`` lists the models, ``strategy`` is a name, a mapping
    with ``type`` or a list of stages, and each attack is a mapping with ``type``.
    """
    from velocity.experiments.config import MODEL_IDS, ExperimentConfig

    body = ExperimentConfig.model_json_schema()
    for key in ("$schema", "title", "description"):
        body.pop(key, None)
    properties = body["properties"]
    properties["model_id"]["enum"] = list(MODEL_IDS)
    properties["strategy"].update(
        description=(
            "a strategy name (`velocity strategies` lists them), a mapping with a 'type' key "
            "and its parameters, or a list of such stages"
        ),
        anyOf=[
            {"type": "string"},
            {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
            {"type": "array", "minItems": 1},
        ],
    )
    properties["attacks"]["items"] = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string"}},
        "description": "an attack (`velocity attacks` lists them): {type: NAME, <params>, "
        "fraction | clients, start_round, end_round}",
    }
    return {
        "$schema": _SCHEMA_DIALECT,
        "title": "VelocityFL experiment configuration",
        "description": (
            "A YAML file for `velocity run --config FILE` and `velocity validate-config FILE`; "
            "every field is described in docs/configuration.md."
        ),
        **body,
    }


def _cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    text = json.dumps(_config_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        out.write(text)
        return EXIT_OK
    from pathlib import Path

    Path(args.output).write_text(text, encoding="utf-8")
    print(f"schema: {args.output}", file=out)
    return EXIT_OK


def _cmd_new(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.experiments.scaffold import create_project, package_name

    project = create_project(args.name, args.dir)
    files = sorted(p for p in project.rglob("*") if p.is_file())
    print(f"created {project} ({len(files)} files):", file=out)
    for path in files:
        print(f"  {path.relative_to(project).as_posix()}", file=out)
    steps = [
        (f"cd {project}", ""),
        ("pip install -e .", "velocityfl and torch, if not installed"),
        (f"python -m {package_name(args.name)}.run", "your model on your data, 5 rounds"),
        ("python -m pytest", "the project's tests"),
        ("velocity run --config config.yaml", "a built-in experiment"),
    ]
    width = max(len(command) for command, _ in steps)
    print("next:", file=out)
    for command, note in steps:
        print(f"  {command:<{width}}  # {note}" if note else f"  {command}", file=out)
    return EXIT_OK


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    if args.output_dir is not None:
        updates["output.dir"] = args.output_dir
    if args.rounds is not None:
        updates["training.num_rounds"] = args.rounds
    if args.seed is not None:
        updates["seed"] = args.seed
    return updates


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    import importlib
    import time

    from velocity.experiments.config import load_config

    config = load_config(args.config)
    updates = _overrides(args)
    if updates:
        config = config.with_updates(updates)
    runner = importlib.import_module("velocity.experiments.runner")
    run_experiment: Callable[..., Any] = runner.run_experiment
    run_dir = config.run_dir()
    total = config.training.num_rounds
    err = sys.stderr

    from velocity.experiments.results import RoundResult

    start = time.perf_counter()
    if args.no_progress:

        def on_round(record: RoundResult) -> None:
            if args.verbose:
                print(
                    f"round {record.round}/{total} accuracy {_fraction(record.global_accuracy)} "
                    f"({time.perf_counter() - start:.1f} s)",
                    file=err,
                )

        result = run_experiment(config, output_dir=run_dir, on_round=on_round, resume=args.resume)
    else:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("round"),
            MofNCompleteColumn(),
            TextColumn("accuracy {task.fields[accuracy]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(file=err)) as progress:
            task = progress.add_task(config.name, total=total, accuracy="-")
            latest: list[float | None] = [None]

            def on_round(record: RoundResult) -> None:
                if record.global_accuracy is not None:
                    latest[0] = record.global_accuracy
                progress.update(task, completed=record.round, accuracy=_fraction(latest[0]))

            result = run_experiment(
                config, output_dir=run_dir, on_round=on_round, resume=args.resume
            )
    _print_run_summary(result, run_dir, out)
    return EXIT_OK


def _cmd_audit_verify(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.governance import verify_run

    report = verify_run(
        args.run_dir,
        trusted_public_key=args.public_key,
        require_signature=args.require_signature,
    )
    signer = f", signed by {report.signer}" if report.signed else ", not signed"
    if report.ok:
        print(
            f"verified: {report.events} events, {report.files_checked} files{signer}",
            file=out,
        )
        return EXIT_OK
    where = (
        f" (first broken event: {report.first_broken_event})"
        if report.first_broken_event is not None
        else ""
    )
    print(f"FAILED{where}", file=out)
    for problem in report.problems:
        print(f"  {problem.where}: {problem.message}", file=out)
    return EXIT_ERROR


def _cmd_audit_keygen(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.governance import generate_signing_key

    public = generate_signing_key(args.path)
    print(f"wrote {args.path} (Ed25519 private key, mode 0600)", file=out)
    print(f"public key: {public}", file=out)
    return EXIT_OK


def _cmd_audit_erase(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    from velocity.governance import erase_client, load_signing_key

    key = None if args.signing_key is None else load_signing_key(Path(args.signing_key))
    erase_client(
        Path(args.run_dir) / "governance", args.client, reason=args.reason, signing_key=key
    )
    print(f"erased the personal record of {args.client}; the chain records the erasure", file=out)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    import tempfile
    from pathlib import Path

    from velocity.experiments.governance import replay

    def show(round_: int, recorded: str, replayed: str | None, same: bool) -> None:
        mark = "identical" if same else "DIFFERENT"
        got = "missing" if replayed is None else replayed[:16]
        print(f"round {round_:>4}  {recorded[:16]}  {got:<16}  {mark}", file=out)

    print("round  recorded chain    replayed chain    result", file=out)
    if args.output_dir is None:
        with tempfile.TemporaryDirectory(prefix="velocity-replay-") as tmp:
            report = replay(args.manifest, output_dir=Path(tmp) / "replay", on_round=show)
    else:
        report = replay(args.manifest, output_dir=Path(args.output_dir), on_round=show)
    for line in report.environment_differences:
        print(f"note: {line}", file=out)
    if report.identical:
        print(f"identical: all {len(report.rows)} links of the model chain reproduce", file=out)
        return EXIT_OK
    print(f"DIFFERENT: the chain first differs at round {report.first_mismatch}", file=out)
    return EXIT_ERROR


def _cmd_bench_robustness(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    from velocity.experiments.robustness import (
        CellResult,
        load_grid,
        markdown_table,
        run_grid,
        write_grid,
    )

    grid = load_grid(args.config)
    if args.rounds is not None and args.rounds < 1:
        print(f"{_PROG}: configuration error: --rounds must be >= 1", file=sys.stderr)
        return EXIT_CONFIG
    target = Path(args.output_dir) if args.output_dir else Path(grid.base.output.dir) / grid.name
    total = len(grid.cells())

    def line(cell: CellResult, done: int, _: int) -> None:
        acc = _fraction(cell.final_accuracy)
        print(
            f"[{done}/{total}] {cell.defence} vs {cell.attack}: accuracy {acc} "
            f"({cell.wall_time_s:.1f} s)",
            file=sys.stderr,
        )

    if args.no_progress:
        results = run_grid(grid, rounds=args.rounds, on_cell=line)
    else:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(),
            transient=False,
        ) as progress:
            task = progress.add_task(grid.name, total=total, last="")

            def advance(cell: CellResult, done: int, _: int) -> None:
                text = f"{cell.defence} vs {cell.attack}: {_fraction(cell.final_accuracy)}"
                progress.update(task, completed=done, last=text)

            results = run_grid(grid, rounds=args.rounds, on_cell=advance)
    files = write_grid(grid, results, target)
    print(markdown_table(grid, results), file=out)
    for kind, path in files.items():
        print(f"{kind}: {path}", file=out)
    return EXIT_OK


def _node_count(text: str) -> int:
    """``--nodes``: an int >= 1 (argparse reports anything else as a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; got {value}")
    return value


def _cmd_fedtrain_run(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.fedtrain import DiLoCoCoordinator, SimulatedNodes, TrainingConfig, read_config

    config = read_config(args.config)  # unreadable, oversized or invalid -> exit 2
    if args.nodes is not None:
        config = TrainingConfig.model_validate({**config.model_dump(), "num_nodes": args.nodes})
    simulation = SimulatedNodes(config, seed=args.seed)
    print(
        f"Starting federated training: {config.model_name}  nodes={config.num_nodes}  "
        f"rounds={config.global_rounds}",
        file=out,
    )
    print(file=out)
    coordinator = DiLoCoCoordinator()
    result = coordinator.run_training(config, simulation.nodes, simulation)
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.6f}"
    print("Training complete.", file=out)
    print(f"  Rounds completed:  {result.rounds_completed}/{result.rounds_planned}", file=out)
    print(f"  Total samples:     {result.total_samples}", file=out)
    print(f"  Final avg loss:    {loss}", file=out)
    print(f"  Duration:          {result.duration_seconds:.3f}s", file=out)
    print(file=out)
    print("Node credits (samples processed):", file=out)
    for node_id, samples in sorted(coordinator.credit_tracker.all_credits().items()):
        print(f"  {node_id}: {samples} samples", file=out)
    return EXIT_OK


def _cmd_fedtrain_verify(args: argparse.Namespace, out: TextIO) -> int:
    import re

    from velocity.errors import ConfigurationError
    from velocity.fedtrain import HashVerifier, read_update

    expected = args.hash.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ConfigurationError(
            f"--hash must be a SHA-256 digest (64 hex digits); got {args.hash[:80]!r}"
        )
    update = read_update(args.update)  # unreadable, oversized or invalid -> exit 2
    verifier = HashVerifier()
    if verifier.verify(update, expected):
        print(f"Verification PASSED.  Hash: {expected}", file=out)
        return EXIT_OK
    computed = verifier.compute_hash(update.gradients)
    print(
        f"Verification FAILED.  Expected: {expected}  Computed: {computed}  "
        f"(the gradients of {update.node_id}, round {update.round_id})",
        file=out,
    )
    return EXIT_ERROR


def _print_run_summary(result: Any, run_dir: Any, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    from velocity.experiments.outputs import build_summary
    from velocity.experiments.report import format_bytes

    summary = build_summary(result)
    table = Table(title=f"run {summary['name']}", title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    rows = [
        ("dataset / model", f"{summary['dataset']} / {summary['model']}"),
        ("strategy", str(summary["strategy_name"])),
        ("rounds", f"{summary['rounds']} of {summary['rounds_planned']}"),
        ("final accuracy", _fraction(summary["final_accuracy"])),
        ("best accuracy", _fraction(summary["best_accuracy"])),
        ("final loss", "-" if summary["final_loss"] is None else f"{summary['final_loss']:.4f}"),
        (
            "communication",
            f"{format_bytes(summary['total_bytes_up'])} up, "
            f"{format_bytes(summary['total_bytes_down'])} down",
        ),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
        *_privacy_row(summary),
        ("config hash", str(summary["config_hash"])[:12]),
        ("outputs", str(run_dir)),
    ]
    for field, value in rows:
        table.add_row(field, value)
    wide = out.isatty() or "COLUMNS" in os.environ
    Console(file=out, width=None if wide else 120, soft_wrap=False).print(table)


def _privacy_row(summary: dict[str, Any]) -> list[tuple[str, str]]:
    privacy = summary.get("privacy")
    if not privacy:
        return []
    return [
        (
            "privacy",
            f"epsilon {privacy['epsilon']:.4g} of {privacy['epsilon_budget']:g} "
            f"(delta {privacy['delta']:g}, {privacy['mode']}, {privacy['accountant']}, "
            f"z={privacy['noise_multiplier']:.4g})",
        )
    ]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"


# ---------------------------------------------------------------------- parser

_Command = Callable[[argparse.Namespace, TextIO], int]


def _global_options(*, top: bool) -> argparse.ArgumentParser:
    """The global options, as a parent parser: the one definition of each.

    The top-level parser takes them with their defaults (``top=True``); every command and
    sub-command takes them too, with ``default=SUPPRESS``, so ``velocity run ... -v`` sets
    ``verbose`` while an absent flag leaves the top-level value (``velocity -v run ...``)
    alone. argparse copies a sub-parser's namespace over the top-level one, so a real
    default there would undo a flag given before the command.
    """
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("global options")
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="more output; show full tracebacks on errors",
    )
    group.add_argument(
        "--version",
        action="version",
        version=f"{_DISTRIBUTION} {__version__}",
        help=f"print '{_DISTRIBUTION} VERSION' and exit",
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools and tests)."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="VelocityFL: fast, robust, reproducible federated learning.",
        epilog=(
            "Exit codes: 0 success, 1 runtime error, 2 usage or configuration error, "
            "130 interrupted. Global options may also follow the command: "
            "velocity run --config FILE -v."
        ),
        parents=[_global_options(top=True)],
    )
    # Every command's parser gets the global options (see _global_options).
    command_options = [_global_options(top=False)]
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_command(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, **kwargs: Any
    ) -> argparse.ArgumentParser:
        return group.add_parser(name, parents=command_options, **kwargs)

    run = add_command(
        commands,
        "run",
        help="run an experiment from a YAML configuration",
        description=(
            "Run the experiment a YAML configuration describes and write its outputs to "
            "<output.dir>/<name>/ (summary.json, metrics.json, communication.json, "
            "config.resolved.yaml, plots/, report.html)."
        ),
    )
    run.add_argument("--config", required=True, metavar="PATH", help="the YAML configuration")
    run.add_argument(
        "--output-dir",
        metavar="DIR",
        help="root output directory (overrides output.dir; the run goes to DIR/<name>)",
    )
    run.add_argument("--rounds", type=int, metavar="N", help="override training.num_rounds")
    run.add_argument("--seed", type=int, metavar="S", help="override seed")
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (with -v: one line per round on stderr)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue this run from its latest good checkpoint (output.checkpoint_every); "
        "refused if the checkpoints belong to another configuration or seed",
    )
    run.set_defaults(handler=_cmd_run)

    validate = add_command(
        commands,
        "validate-config",
        help="check a YAML configuration without running it",
        description=(
            "Validate a YAML configuration. Prints 'valid: NAME (HASH)' and exits 0, or prints "
            "every problem (one per line, by dotted field path) on stderr and exits 2."
        ),
    )
    validate.add_argument("path", metavar="PATH", help="the YAML configuration")
    validate.set_defaults(handler=_cmd_validate_config)

    schema = add_command(
        commands,
        "schema",
        help="print the JSON Schema of a configuration file (editor completion)",
        description=(
            "Write the JSON Schema (draft 2020-12) of an experiment configuration to stdout or "
            "--output. Point an editor at it for completion and checking, e.g. VS Code's YAML "
            "extension with a first line '# yaml-language-server: $schema=velocity.schema.json' "
            "in the configuration (docs/cli.md)."
        ),
    )
    schema.add_argument("--output", metavar="PATH", help="write the schema to PATH")
    schema.set_defaults(handler=_cmd_schema)

    new = add_command(
        commands,
        "new",
        help="create a project skeleton: your own model and data, tests, a config",
        description=(
            "Create DIR/NAME/ with a README, a pyproject.toml, a package (model.py: a custom "
            "torch.nn.Module; data.py: a custom dataset, generated offline; run.py: the "
            "federation over them), config.yaml (a built-in experiment for velocity run) and "
            "tests/. Refuses an existing non-empty directory."
        ),
    )
    new.add_argument(
        "name",
        metavar="NAME",
        help="project name: a letter, then letters, digits, '_' or '-' (the package is NAME "
        "in lower case with '-' as '_')",
    )
    new.add_argument("--dir", default=".", metavar="DIR", help="where to create NAME/ (default: .)")
    new.set_defaults(handler=_cmd_new)

    strategies = add_command(
        commands,
        "strategies",
        help="list the available aggregation strategies and stages",
        description="List every registered strategy stage: name, kind, parameters, summary.",
    )
    strategies.add_argument("--json", action="store_true", help="print JSON instead of a table")
    strategies.set_defaults(handler=_cmd_strategies)

    attacks = add_command(
        commands,
        "attacks",
        help="list the available attacks",
        description=(
            "List every attack of velocity.attacks: name, kind (update or data), whether it "
            "sees the round's honest updates, parameters, summary."
        ),
    )
    attacks.add_argument("--json", action="store_true", help="print JSON instead of a table")
    attacks.set_defaults(handler=_cmd_attacks)

    backends = add_command(
        commands,
        "backends",
        help="list the available client backends",
        description=(
            "List every backend of velocity.sim.backends (where simulated clients run, the "
            "configuration's backend.type): name and description."
        ),
    )
    backends.add_argument("--json", action="store_true", help="print JSON instead of a table")
    backends.set_defaults(handler=_cmd_backends)

    bench = add_command(
        commands,
        "bench",
        help="benchmarks that run federations (robustness grid)",
        description="Benchmarks that run whole federations.",
    )
    benches = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    robustness = add_command(
        benches,
        "robustness",
        help="every attack against every defence on one federation",
        description=(
            "Run the grid of attacks x defences a grid YAML describes (see "
            "docs/robustness.md) and write results.csv, results.md and heatmap.png to "
            "<base.output.dir>/<name>/ (or --output-dir)."
        ),
    )
    robustness.add_argument("--config", required=True, metavar="PATH", help="the grid YAML")
    robustness.add_argument("--output-dir", metavar="DIR", help="where to write the tables")
    robustness.add_argument("--rounds", type=int, metavar="N", help="override the rounds per cell")
    robustness.add_argument(
        "--no-progress", action="store_true", help="one line per cell on stderr instead of a bar"
    )
    robustness.set_defaults(handler=_cmd_bench_robustness)

    audit = add_command(
        commands,
        "audit",
        help="check, sign and erase in a run's governance files",
        description="The audit trail of a governed run (governance.enabled: true).",
    )
    audits = audit.add_subparsers(dest="audit", metavar="ACTION", required=True)
    verify = add_command(
        audits,
        "verify",
        help="check the hash chain, the signature and the run's file digests",
        description=(
            "Check RUN_DIR/governance: every event's hash and link, audit_log.json against "
            "audit_log.jsonl, the signature, clients.json against its commitments and the "
            "digest of every file the last event lists. Exits 0 when all hold, else 1 naming "
            "the first broken event."
        ),
    )
    verify.add_argument("run_dir", metavar="RUN_DIR", help="the run's output directory")
    verify.add_argument(
        "--public-key", metavar="HEX", help="the signer's Ed25519 public key to require"
    )
    verify.add_argument(
        "--require-signature", action="store_true", help="fail when the log is not signed"
    )
    verify.set_defaults(handler=_cmd_audit_verify)
    keygen = add_command(
        audits,
        "keygen",
        help="write a new Ed25519 signing key",
        description="Write a new Ed25519 private key (PKCS8 PEM, mode 0600) for governance.sign.",
    )
    keygen.add_argument("path", metavar="PATH", help="where to write the key (must not exist)")
    keygen.set_defaults(handler=_cmd_audit_keygen)
    erase = add_command(
        audits,
        "erase",
        help="erase a client's personal record (the chain stays verifiable)",
        description=(
            "Delete a client's record from governance/clients.json and append an erasure "
            "event; a signed log is re-signed (--signing-key required)."
        ),
    )
    erase.add_argument("run_dir", metavar="RUN_DIR", help="the run's output directory")
    erase.add_argument("--client", required=True, metavar="ID", help="the client id")
    erase.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    erase.add_argument("--signing-key", metavar="PATH", help="the key that signed the log")
    erase.set_defaults(handler=_cmd_audit_erase)

    replay_cmd = add_command(
        commands,
        "replay",
        help="re-run a replay manifest and compare the model chain",
        description=(
            "Re-run the experiment a governance/replay_manifest.json records (same config, "
            "seed and torch thread count) and report, round by round, whether the model hash "
            "chain is identical. Exits 0 when it is, 1 otherwise."
        ),
    )
    replay_cmd.add_argument("manifest", metavar="MANIFEST", help="replay_manifest.json")
    replay_cmd.add_argument(
        "--output-dir", metavar="DIR", help="keep the replay's outputs here (default: temporary)"
    )
    replay_cmd.set_defaults(handler=_cmd_replay)

    fedtrain = add_command(
        commands,
        "fedtrain",
        help="the aumai-fedtrain surface: a simulated DiLoCo run, update hash checks",
        description=(
            "DiLoCo federated training with the aumai-fedtrain API (velocity.fedtrain, see "
            "docs/fedtrain.md)."
        ),
    )
    fedtrains = fedtrain.add_subparsers(dest="fedtrain", metavar="ACTION", required=True)
    fedtrain_run = add_command(
        fedtrains,
        "run",
        help="a simulated training run from a train.json",
        description=(
            "Run DiLoCo on simulated nodes (seeded linear-regression shards trained with "
            "AdamW, see velocity.fedtrain.SimulatedNodes) with the settings of a train.json "
            "(model_name, learning_rate, batch_size, local_steps, global_rounds, num_nodes); "
            "print the summary and every node's credit."
        ),
    )
    fedtrain_run.add_argument(
        "--config", required=True, metavar="PATH", help="the train.json (a TrainingConfig)"
    )
    fedtrain_run.add_argument(
        "--nodes", type=_node_count, metavar="N", help="override num_nodes (an int >= 1)"
    )
    fedtrain_run.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the simulation (default: 0)"
    )
    fedtrain_run.set_defaults(handler=_cmd_fedtrain_run)
    fedtrain_verify = add_command(
        fedtrains,
        "verify",
        help="check a LocalUpdate file against a SHA-256 hash of its gradients",
        description=(
            "Hash the gradients of a LocalUpdate JSON file (SHA-256 of json.dumps(gradients, "
            "sort_keys=True)) and compare with HEX. Exits 0 printing 'Verification PASSED.' "
            "on a match, 1 printing 'Verification FAILED.' otherwise, 2 for a malformed, "
            "oversized (> 64 MiB) or unreadable file or a malformed hash."
        ),
    )
    fedtrain_verify.add_argument(
        "--update", required=True, metavar="PATH", help="the update.json (a LocalUpdate)"
    )
    fedtrain_verify.add_argument(
        "--hash", required=True, metavar="HEX", help="the expected SHA-256 hex digest"
    )
    fedtrain_verify.set_defaults(handler=_cmd_fedtrain_verify)

    version = add_command(
        commands,
        "version",
        help="print the installed version",
        description="Print the installed VelocityFL version (with -v: python, torch, numpy).",
    )
    version.set_defaults(handler=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``velocity`` command line; return the exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        ``0`` success, ``1`` runtime error, ``2`` usage or configuration error, ``130``
        interrupted.

    Examples
    --------
    >>> main(["version"])  # doctest: +ELLIPSIS
    velocity ...
    0

    Notes
    -----
    Sets ``THP_MEM_ALLOC_ENABLE=1`` in ``os.environ`` unless it is already set (see the module
    docstring), before any command imports torch.
    """
    _configure_process()  # first: nothing may import torch before this
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        code = exit_.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_CONFIG)

    handler: _Command = args.handler
    try:
        return handler(args, sys.stdout)
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        return _report(error, verbose=args.verbose)


def _report(error: Exception, *, verbose: bool) -> int:
    """Print ``error`` as one line on stderr (plus the traceback when verbose)."""
    from velocity.errors import ConfigurationError, VelocityError

    if verbose:
        traceback.print_exc(file=sys.stderr)
    if isinstance(error, ConfigurationError):
        # A configuration file can have several problems: one per line, indented.
        first, *rest = str(error).splitlines() or [type(error).__name__]
        print(f"{_PROG}: configuration error: {' '.join(first.split())}", file=sys.stderr)
        for line in rest:
            print(f"  {line.strip()}", file=sys.stderr)
        return EXIT_CONFIG
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, VelocityError):
        message = f"{type(error).__name__}: {message}"
    hint = "" if verbose else " (run with -v for the traceback)"
    print(f"{_PROG}: error: {message}{hint}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
