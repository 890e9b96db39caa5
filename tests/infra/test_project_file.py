"""The Pulumi project files as the CLI will read them (no CLI here, so its rules are checked directly).

The rules are those of the CLI's project loader (sdk/go/common/workspace/project.go,
`Project.Validate`, and config.go's stack-value validation): a key outside the
project's namespace may carry only a `value` (no `type`, no `default`); an
array declares its `items`; every stack file's value for a typed key has that
type. A typed `aws:region` once made every `pulumi` command refuse the project.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components.config import CONFIG_KEYS, REQUIRED_KEYS

REPO = Path(__file__).resolve().parents[2]
PROJECTS = [REPO / "Pulumi.yaml", REPO / "bootstrap" / "Pulumi.yaml"]


def project_problems(project: dict) -> list[str]:
    name, problems = project["name"], []
    for key, spec in (project.get("config") or {}).items():
        spec = spec if isinstance(spec, dict) else {"value": spec}
        own = ":" not in key or key.startswith(f"{name}:")
        if "default" in spec and "value" in spec:
            problems.append(f"project config '{key}' cannot have both a 'default' and 'value' attribute")
        if own:
            if spec.get("type") == "array" and "items" not in spec:
                problems.append(
                    f"The configuration key '{key}' declares an array but does not specify the underlying "
                    "type via the 'items' attribute"
                )
            if "type" in spec and "default" in spec and not value_has_type(spec["default"], spec):
                problems.append(
                    f"The default value specified for configuration key '{key}' is not of the expected type"
                )
        else:
            if "type" in spec:
                problems.append(
                    f"Configuration key '{key}' is not namespaced by the project and should not define a type"
                )
            if "default" in spec:
                problems.append(
                    f"Configuration key '{key}' is not namespaced by the project and should not define a default value"
                )
            if "value" not in spec:
                problems.append(f"Configuration key '{key}' is namespaced and must provide an attribute 'value'")
    return problems


def value_has_type(value, spec: dict) -> bool:
    t = spec["type"]
    if t == "string":
        return isinstance(value, str)
    if t == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return True
        return isinstance(value, str) and value.lstrip("-").isdigit()
    if t == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if t == "array":
        return isinstance(value, list) and all(value_has_type(v, spec["items"]) for v in value)
    return False


@pytest.mark.parametrize("path", PROJECTS, ids=lambda p: str(p.relative_to(REPO)))
def test_project_file_passes_the_cli_rules(path):
    assert project_problems(yaml.safe_load(path.read_text())) == []


def test_the_rules_reject_a_typed_provider_key():
    project = {"name": "cosmos-s3-export", "config": {"aws:region": {"type": "string"}, "ids": {"type": "array"}}}
    assert project_problems(project) == [
        "Configuration key 'aws:region' is not namespaced by the project and should not define a type",
        "Configuration key 'aws:region' is namespaced and must provide an attribute 'value'",
        "The configuration key 'ids' declares an array but does not specify the underlying type via the 'items' attribute",
    ]


@pytest.mark.parametrize("path", PROJECTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_stack_file_satisfies_its_project_schema(path):
    project = yaml.safe_load(path.read_text())
    name = project["name"]
    stack_dir = path.parent / project.get("stackConfigDir", ".")
    stack_files = sorted(stack_dir.glob("Pulumi.*.yaml"))
    assert stack_files
    for stack_file in stack_files:
        values = yaml.safe_load(stack_file.read_text())["config"]
        for key, spec in (project.get("config") or {}).items():
            full = key if ":" in key else f"{name}:{key}"
            if full not in values:
                # The CLI's "Stack '<s>' is missing configuration value '<key>'".
                assert "default" in spec or "value" in spec, f"{stack_file.name} lacks required {key}"
                continue
            if "type" in spec:
                assert value_has_type(values[full], spec), f"{stack_file.name}: {key}={json.dumps(values[full])}"


def test_schema_keys_are_config_keys_and_required_ones_are_declared():
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    declared = set(project["config"])
    assert declared <= set(CONFIG_KEYS)
    # Every required key of this project's namespace is in the schema, so the CLI names it when missing.
    assert {k for k in REQUIRED_KEYS if ":" not in k} == {k for k, s in project["config"].items() if "default" not in s}
