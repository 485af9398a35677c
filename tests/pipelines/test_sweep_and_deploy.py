"""The sweep over Train PyTorch Model (its YAML and the SDK script's --sweep build the same sweep, both validated
offline) and the online endpoint and deployment YAMLs, as azure-ai-ml reads them. The metric names the sweep
uses are checked against a real run's in tests/components/test_train_component.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from test_train_pipeline import CONFIG_EXAMPLE, PIPELINES, _submit_script

from conftest import REPO_ROOT

SWEEP_YAML = PIPELINES / "sweep_pipeline.yaml"
DEPLOY = REPO_ROOT / "deploy"


def sweep_node(job: Any) -> Any:
    return job.jobs["sweep"]


def search_space(node: Any) -> dict[str, dict]:
    return {name: value._to_rest_object() for name, value in node.search_space.items()}


def test_the_sweep_yaml_validates_offline_and_sweeps_the_components_inputs(aml: Any) -> None:
    job = aml.load_job(source=SWEEP_YAML)
    result = job._validate()
    assert result.passed, result.error_messages
    node = sweep_node(job)
    component = yaml.safe_load((REPO_ROOT / "component.yaml").read_text(encoding="utf-8"))["inputs"]
    # The SDK does not check this: a misspelt name would sweep nothing.
    swept = {"learning_rate", "batch_size", "augmentation", "label_smoothing"}
    assert set(node.search_space) == swept and swept <= set(component)
    assert set(node.search_space["augmentation"].values) <= set(component["augmentation"]["enum"])
    assert all(size >= component["batch_size"]["min"] for size in node.search_space["batch_size"].values)
    assert (node.objective.primary_metric, node.objective.goal) == ("valid_accuracy", "maximize")
    assert node.early_termination.type == "bandit"


def test_the_sdk_script_builds_the_same_sweep(aml: Any, tmp_path) -> None:
    result = _submit_script("--config", str(CONFIG_EXAMPLE), "--dry-run", "--sweep")
    assert result.returncode == 0, result.stderr
    assert "Offline validation passed" in result.stderr
    printed = tmp_path / "printed.yaml"
    printed.write_text(result.stdout.split("\n", 1)[1], encoding="utf-8")
    from_script, from_yaml = sweep_node(aml.load_job(source=printed)), sweep_node(aml.load_job(source=SWEEP_YAML))
    assert search_space(from_script) == search_space(from_yaml)
    assert from_script.objective.primary_metric == from_yaml.objective.primary_metric
    assert from_script.limits.max_total_trials == from_yaml.limits.max_total_trials
    assert from_script.limits.max_concurrent_trials == from_yaml.limits.max_concurrent_trials
    assert from_script.early_termination.slack_factor == from_yaml.early_termination.slack_factor
    assert from_script.inputs["epochs"]._data == from_yaml.inputs["epochs"]._data == 15


def test_the_endpoint_and_its_deployment_load(aml: Any) -> None:
    endpoint = aml.load_online_endpoint(source=DEPLOY / "endpoint.yaml")
    deployment = aml.load_online_deployment(source=DEPLOY / "deployment.yaml")
    assert type(endpoint).__name__ == "ManagedOnlineEndpoint" and endpoint.auth_mode == "key"
    assert type(deployment).__name__ == "ManagedOnlineDeployment"
    assert deployment.endpoint_name == endpoint.name
    # No-code MLflow deployment: Azure ML builds the scoring environment and script from the model.
    assert deployment.environment is None and deployment.code_configuration is None
    assert deployment.instance_count >= 1 and deployment.request_settings.request_timeout_ms >= 5000


def test_a_deployment_yaml_with_a_wrong_field_is_refused(aml: Any, tmp_path) -> None:
    broken = yaml.safe_load((DEPLOY / "deployment.yaml").read_text(encoding="utf-8"))
    broken["instance_count"] = "two"
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    with pytest.raises(Exception, match="instance_count"):
        aml.load_online_deployment(source=path)
