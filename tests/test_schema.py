"""``velocity schema``: the JSON Schema of an experiment configuration, for editors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from velocity import cli
from velocity.experiments.config import MODEL_IDS, ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
#: Top-level keys every configuration has (the schema lists every field, these included).
TOP_LEVEL = {
    "name",
    "seed",
    "dataset",
    "data_dir",
    "model_id",
    "strategy",
    "training",
    "client",
    "simulation",
    "privacy",
    "governance",
    "async_fl",
    "compression",
    "attacks",
    "backend",
    "output",
}


def _schema(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert cli.main(["schema", *argv]) == cli.EXIT_OK
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    return schema


def test_schema_is_json_with_every_top_level_key(capsys: pytest.CaptureFixture[str]) -> None:
    schema = _schema(capsys)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "VelocityFL experiment configuration"
    assert schema["type"] == "object"
    assert set(schema["properties"]) == set(ExperimentConfig.model_fields)
    assert set(schema["properties"]) >= TOP_LEVEL
    assert set(schema["required"]) == {"name", "dataset"}
    assert schema["additionalProperties"] is False  # a misspelt key is flagged by the editor
    assert schema["properties"]["model_id"]["enum"] == list(MODEL_IDS)
    training = schema["$defs"]["TrainingConfig"]["properties"]
    assert training["client_fraction"] == {
        "default": 0.5,
        "exclusiveMinimum": 0,
        "maximum": 1,
        "title": "Client Fraction",
        "type": "number",
    }


def test_schema_output_writes_the_same_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = _schema(capsys)
    target = tmp_path / "velocity.schema.json"
    assert cli.main(["schema", "--output", str(target)]) == cli.EXIT_OK
    assert capsys.readouterr().out == f"schema: {target}\n"
    assert json.loads(target.read_text(encoding="utf-8")) == printed


def test_schema_output_to_a_missing_directory_is_a_runtime_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "such" / "dir" / "schema.json"
    assert cli.main(["schema", "--output", str(target)]) == cli.EXIT_ERROR
    assert "velocity: error: FileNotFoundError" in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configurations_validate_against_the_schema(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _schema(capsys)
    jsonschema.Draft202012Validator.check_schema(schema)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"name": "x"}, "'dataset' is a required property"),
        ({"name": "x", "dataset": "mnist", "trainin": {}}, "'trainin' was unexpected"),
        ({"name": "x", "dataset": "mnist", "model_id": "resnet"}, "'resnet' is not one of"),
        ({"name": "x", "dataset": "mnist", "training": {"client_fraction": 1.5}}, "1.5"),
        ({"name": "x", "dataset": "mnist", "attacks": [{"fraction": 0.2}]}, "'type'"),
    ],
)
def test_the_schema_rejects_what_the_configuration_rejects(
    data: dict[str, Any], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from velocity.experiments.config import InvalidConfigError, parse_config

    with pytest.raises(InvalidConfigError):
        parse_config(data)
    errors = list(jsonschema.Draft202012Validator(_schema(capsys)).iter_errors(data))
    assert any(problem in error.message for error in errors), [e.message for e in errors]
