"""``obsbench schema``: JSON Schemas that editors can use to check the shipped specs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from obsbench.catalog import FAMILIES
from obsbench.cli import main
from tests.conftest import SPECS


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    out = tmp_path_factory.mktemp("schemas")
    assert main(["schema", "--out", str(out)]) == 0
    return {name: json.loads((out / f"{name}.schema.json").read_text()) for name in FAMILIES}


def test_every_shipped_spec_satisfies_its_family_schema(
        schemas: dict[str, dict[str, object]]) -> None:
    checked = 0
    for family, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        for path in sorted((SPECS / family).glob("*.yaml")):
            jsonschema.validate(yaml.safe_load(path.read_text()), schema)
            checked += 1
    assert checked >= 20


def test_schemas_use_only_json_schema_keywords(schemas: dict[str, dict[str, object]]) -> None:
    """pydantic leaks its own constraint names (gt, ge, ...) when a type is built wrongly."""
    text = json.dumps(schemas)
    for leaked in ('"gt"', '"ge"', '"lt"', '"le"'):
        assert leaked not in text


@pytest.mark.parametrize(("family", "spec"), [
    ("optimizers", {"kind": "adam", "lr": -1}),
    ("optimizers", {"kind": "nag", "momentum": 0}),
    ("optimizers", {"kind": "momentum", "momentum": 1}),
    ("optimizers", {"kind": "adam", "betas": [0.9, 0.99]}),
    ("optimizers", {"kind": "adamm"}),
    ("problems", {"kind": "mnist1d", "model": "resnet"}),
    ("suites", {"kind": "benchmark", "problems": [], "optimizers": ["sgd"]}),
])
def test_schemas_reject_what_validate_rejects(schemas: dict[str, dict[str, object]],
                                              family: str, spec: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, schemas[family])


def test_schema_without_out_prints_all_families(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(FAMILIES)


def test_schema_out_must_be_a_directory(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert main(["schema", "--out", str(target)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
