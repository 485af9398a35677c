"""The training pipeline: its YAML as azure-ai-ml reads it, the SDK script's dry run, and a local end-to-end run.

Nothing here reaches the network: the pipeline is validated with the SDK's local checks, the SDK script runs
with a dead proxy so that any attempt to go out would fail the test, and the local runner runs components as
plain processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT, write_digits_subset
from train_pytorch_model.local.local_runner import main

PIPELINES = REPO_ROOT / "pipelines"


PIPELINE_YAML = PIPELINES / "train_pipeline.yaml"


SUBMIT_SCRIPT = PIPELINES / "submit_pipeline.py"


CONFIG_EXAMPLE = PIPELINES / "config.example.yaml"


COMPANION_COMPONENTS = [
    REPO_ROOT / "components" / name
    for name in ("resnet.yaml", "densenet.yaml", "convert_to_image_directory.yaml", "score_image_model.yaml")
]


STEPS = ["init_model", "convert_training", "convert_validation", "train", "score"]


# Every connection through these fails at once, so a test that tried the network would fail, not hang.
OFFLINE_ENV = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


# --- the pipeline YAML, as az ml job create reads it ----------------------------------------------------


def test_pipeline_yaml_loads(aml: Any) -> None:
    job = aml.load_job(source=PIPELINE_YAML)
    assert job.type == "pipeline"
    assert list(job.jobs) == STEPS
    assert job.settings.default_compute == "cpu-cluster"
    assert set(job.inputs) == {
        "training_images",
        "validation_images",
        "epochs",
        "batch_size",
        "learning_rate",
        "random_seed",
        "patience",
    }
    assert set(job.outputs) == {"trained_model", "scored_dataset"}
    train = job.jobs["train"]
    assert train.compute == "gpu-cluster"
    assert train.distribution.type == "pytorch"
    assert train.distribution.process_count_per_instance == 1
    assert train.resources.instance_count == 1
    # Only the training step asks for GPUs; the others run on the default compute.
    assert all(job.jobs[name].compute is None for name in STEPS if name != "train")
    init = job.jobs["init_model"]
    assert init.inputs["model_name"]._data == "resnet18"
    assert init.inputs["pretrained"]._data is True


def test_pipeline_yaml_validates_offline(aml: Any) -> None:
    """The SDK's local validation (PipelineJob._validate): schema, bindings, every component.

    Not MLClient.jobs.validate: after these same local checks it looks up each compute in the workspace
    (JobOperations._try_get_compute_arm_id), which asks the credential for a token and calls
    management.azure.com, so with a dummy credential and no network it reports a connection error.
    """
    job = aml.load_job(source=PIPELINE_YAML)
    result = job._validate()
    assert result.passed, result.error_messages


def test_pipeline_yaml_placeholders_are_overridable_with_set(aml: Any) -> None:
    """What az ml job create --set does (params_override on the loaded YAML), so the file needs no edit."""
    job = aml.load_job(
        source=PIPELINE_YAML,
        params_override=[
            {"settings.default_compute": "azureml:my-cpus"},
            {"jobs.train.compute": "azureml:my-gpus"},
            {"inputs.training_images.path": "azureml:my-train-images@latest"},
            {"inputs.validation_images.path": "azureml:my-valid-images:3"},
            {"jobs.train.distribution.process_count_per_instance": 4},
            {"jobs.train.resources.instance_count": 2},
            {"inputs.epochs": 10},
        ],
    )
    assert job.settings.default_compute == "my-cpus"
    assert job.jobs["train"].compute == "my-gpus"
    assert job.inputs["training_images"].path.endswith("my-train-images@latest")
    assert job.jobs["train"].distribution.process_count_per_instance == 4
    assert job.jobs["train"].resources.instance_count == 2
    assert job.inputs["epochs"]._data == 10
    assert job._validate().passed


def test_pipeline_yaml_missing_input_fails_validation(aml: Any, tmp_path: Path) -> None:
    """The local validation is not a rubber stamp: a step without a required input fails it."""
    document = yaml.safe_load(PIPELINE_YAML.read_text(encoding="utf-8"))
    del document["jobs"]["score"]["inputs"]["dataset"]
    for job in document["jobs"].values():
        job["component"] = str((PIPELINES / job["component"]).resolve())
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = aml.load_job(source=broken)._validate()
    assert not result.passed
    assert "jobs.score.inputs.dataset" in result.error_messages


# --- the SDK script ---------------------------------------------------------------------------------------


def _submit_script(*args: str) -> subprocess.CompletedProcess[str]:
    # sys.executable: the interpreter running the tests (/work/venv/bin/python here), which has azure-ai-ml.
    env = {**os.environ, **OFFLINE_ENV}
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, str(SUBMIT_SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )


def test_submit_script_dry_run_prints_a_valid_pipeline(aml: Any) -> None:
    result = _submit_script(
        "--config",
        str(CONFIG_EXAMPLE),
        "--dry-run",
        "--epochs",
        "7",
        "--train-compute",
        "azureml:a100-cluster",
        "--instance-count",
        "2",
        "--process-count-per-instance",
        "4",
    )
    assert result.returncode == 0, result.stderr
    assert "Offline validation passed" in result.stderr
    printed = yaml.safe_load(result.stdout.split("\n", 1)[1])  # after the "# Would submit ..." line
    assert printed["type"] == "pipeline"
    assert list(printed["jobs"]) == STEPS
    assert printed["inputs"]["epochs"] == 7
    assert printed["settings"]["default_compute"] == "azureml:cpu-cluster"
    train = printed["jobs"]["train"]
    assert train["compute"] == "azureml:a100-cluster"
    assert train["distribution"]["process_count_per_instance"] == 4
    assert train["resources"]["instance_count"] == 2
    assert printed["jobs"]["score"]["inputs"]["trained_model"]["path"] == "${{parent.jobs.train.outputs.trained_model}}"


def test_submit_script_dry_run_fills_missing_settings_with_placeholders(aml: Any, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"training_images": str(tmp_path / "train"), "pretrained": False}), encoding="utf-8")
    result = _submit_script("--config", str(config), "--dry-run")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout.split("\n", 1)[1])
    # A local folder (uploaded at submission; the SDK prints it with an azureml: prefix).
    assert printed["inputs"]["training_images"]["path"].endswith(str(tmp_path / "train"))
    # The missing validation images got the placeholder.
    assert printed["inputs"]["validation_images"]["path"].startswith("azureml://datastores/")
    assert printed["jobs"]["init_model"]["inputs"]["pretrained"] in (False, 0)


def test_submit_script_refuses_to_submit_without_a_workspace(aml: Any) -> None:
    result = _submit_script("--training-images", "x", "--validation-images", "y")
    assert result.returncode == 2
    assert "subscription_id" in result.stderr
    assert "resource_group" in result.stderr


def test_submit_script_rejects_unknown_config_keys(aml: Any, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("epoch: 3\n", encoding="utf-8")
    result = _submit_script("--config", str(config), "--dry-run")
    assert result.returncode == 2
    assert "epoch" in result.stderr


def test_submit_script_checks_config_values_like_the_command_line(aml: Any, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("epochs: abc\nmodel_name: resnet19\nlearning_rate: 0\n", encoding="utf-8")
    result = _submit_script("--config", str(config), "--dry-run")
    assert result.returncode == 2, result.stderr
    assert "epochs is 'abc', not an integer" in result.stderr and "'resnet19', not one of" in result.stderr
    assert "learning_rate is 0, below the minimum" in result.stderr
    config.write_text("a: [b\n", encoding="utf-8")
    result = _submit_script("--config", str(config), "--dry-run")
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


# --- the real pipeline, end to end on a tiny dataset --------------------------------------------------------


@pytest.mark.skipif(
    not all(path.is_file() for path in COMPANION_COMPONENTS),
    reason="components/*.yaml (Init Image Model, Convert to Image Directory, Score Image Model) are missing",
)
def test_train_pipeline_runs_locally_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    train = write_digits_subset(tmp_path / "raw" / "train", classes=(0, 1), per_class=12)
    valid = write_digits_subset(tmp_path / "raw" / "valid", classes=(0, 1), per_class=6, offset=12)
    work = tmp_path / "work"
    trained = tmp_path / "trained_model"
    code = main(
        [
            str(PIPELINE_YAML),
            "--input",
            f"training_images={train}",
            "--input",
            f"validation_images={valid}",
            "--input",
            "epochs=1",
            "--input",
            "batch_size=4",
            "--set",
            "jobs.init_model.inputs.pretrained=false",  # no ImageNet download
            "--output",
            f"trained_model={trained}",
            "--workdir",
            str(work),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "steps in order: init_model -> convert_training -> convert_validation -> train -> score" in out
    assert "ignoring compute, distribution, resources locally" in out
    assert (trained / "_meta.yaml").is_file()
    assert (work / "score" / "scored_dataset" / "_data.parquet").is_file()
    # MLflow went under the workdir, not into the code folder (the source tree).
    assert (work / "mlflow.db").is_file()


def test_example_config_has_every_setting() -> None:
    sys.path.insert(0, str(PIPELINES))
    try:
        import submit_pipeline
    finally:
        sys.path.remove(str(PIPELINES))
    config = yaml.safe_load(CONFIG_EXAMPLE.read_text(encoding="utf-8"))
    assert set(config) == set(submit_pipeline.DEFAULTS)


def test_readme_documents_the_three_ways() -> None:
    readme = (PIPELINES / "README.md").read_text(encoding="utf-8")
    for text in ("az ml job create --file pipelines/train_pipeline.yaml", "submit_pipeline.py", "local_runner"):
        assert text in readme
    for text in ("process_count_per_instance", "instance_count"):
        assert text in readme
