"""Build the training pipeline of train_pipeline.yaml with the Python SDK and submit it.

    python pipelines/submit_pipeline.py --config pipelines/config.yaml            # submit
    python pipelines/submit_pipeline.py --config pipelines/config.example.yaml --dry-run
    python pipelines/submit_pipeline.py --config pipelines/config.yaml --sweep       # sweep_pipeline.yaml's graph

Why a script as well as the YAML: the SDK lets the workspace, the computes, the data and the GPU layout come
from a config file or the command line (one file per environment, nothing edited in the pipeline), and
``--dry-run`` checks the whole pipeline offline (components and pipeline validated by azure-ai-ml, no
credential asked for, no network) before anything is paid for.

Settings come from, lowest priority first: the defaults below, ``--config FILE`` (YAML or JSON with the same
keys as the options, underscores for dashes), then the command-line options.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = {
    "resnet": ROOT / "components" / "resnet.yaml",
    "convert": ROOT / "components" / "convert_to_image_directory.yaml",
    "train": ROOT / "component.yaml",
    "score": ROOT / "components" / "score_image_model.yaml",
}

# Every setting, with its default (None: required for a submission, optional for --dry-run).
DEFAULTS: dict[str, Any] = {
    "subscription_id": None,
    "resource_group": None,
    "workspace_name": None,
    "experiment_name": "train_pytorch_model",
    "default_compute": "cpu-cluster",
    "train_compute": "gpu-cluster",
    "instance_count": 1,
    "process_count_per_instance": 1,
    "training_images": None,
    "validation_images": None,
    "model_name": "resnet18",
    "pretrained": True,
    "epochs": 5,
    "batch_size": 16,
    "learning_rate": 0.001,
    "random_seed": 1,
    "patience": 3,
}
# Stand-ins that let --dry-run build a complete pipeline when the workspace or data are not configured yet.
DRY_RUN_PLACEHOLDERS: dict[str, Any] = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "dry-run-rg",
    "workspace_name": "dry-run-ws",
    "training_images": "azureml://datastores/workspaceblobstore/paths/train_pytorch_model/images/train/",
    "validation_images": "azureml://datastores/workspaceblobstore/paths/train_pytorch_model/images/valid/",
}
_INTEGERS = ("instance_count", "process_count_per_instance", "epochs", "batch_size", "random_seed", "patience")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config (JSON is YAML); unknown keys are an error, so a typo is not ignored."""
    text = Path(path).read_text(encoding="utf-8")
    config = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    config = config or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    return config


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML or JSON file with any of the settings below")
    parser.add_argument("--dry-run", action="store_true", help="build and validate offline, print, do not submit")
    parser.add_argument("--stream", action="store_true", help="after submitting, stream the job's log")
    parser.add_argument("--sweep", action="store_true", help="sweep_pipeline.yaml's graph: a sweep over training")
    types: dict[str, Any] = {name: int for name in _INTEGERS}
    types.update({"learning_rate": float, "pretrained": _bool})
    for name in DEFAULTS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=types.get(name, str), default=None)
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the config file, then the command line; placeholders fill gaps only for --dry-run."""
    settings = dict(DEFAULTS)
    if args.config:
        settings.update(load_config(args.config))
    settings.update({name: getattr(args, name) for name in DEFAULTS if getattr(args, name) is not None})
    missing = [name for name, value in settings.items() if value is None]
    if missing and not args.dry_run:
        raise ValueError(f"missing setting(s) {', '.join(missing)}: pass them as options or in --config")
    for name in missing:
        settings[name] = DRY_RUN_PLACEHOLDERS[name]
    for key in ("default_compute", "train_compute"):
        settings[key] = str(settings[key]).removeprefix("azureml:")
    check_parameter_values(settings)
    return settings


# Which component input each parameter setting feeds (its type, enum, min and max are checked against it).
PARAMETER_INPUTS = {
    "model_name": ("resnet", "model_name"),
    "pretrained": ("resnet", "pretrained"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "learning_rate": ("train", "learning_rate"),
    "random_seed": ("train", "random_seed"),
    "patience": ("train", "patience"),
}


def check_parameter_values(settings: Mapping[str, Any]) -> None:
    """A value from the config file gets the same checks as one from the command line, and both the component's
    own (type, enum, min, max), so that a bad value fails here rather than on the compute after the first steps."""
    from train_pytorch_model.local.command_line import input_value_problem

    problems = []
    for name in _INTEGERS:
        if isinstance(settings[name], bool) or not isinstance(settings[name], int):
            problems.append(f"{name} is {settings[name]!r}, not an integer")
    specs = {key: yaml.safe_load(COMPONENTS[key].read_text(encoding="utf-8")) for key in ("resnet", "train")}
    for name, (component, input_name) in PARAMETER_INPUTS.items():
        problem = input_value_problem(specs[component]["inputs"][input_name], settings[name])
        if problem:
            problems.append(f"{name} {problem}")
    if problems:
        raise ValueError("; ".join(dict.fromkeys(problems)))


def _data_input(path: str) -> Any:
    """A uri_folder input; a local folder is made absolute (it is uploaded at submission, from anywhere)."""
    from azure.ai.ml import Input

    # azureml:, azureml://, https://, abfss://... are workspace or cloud paths; C:\\... is a local one.
    is_remote = re.match(r"^[A-Za-z][\w+.-]+:", path) is not None
    return Input(type="uri_folder", path=path if is_remote else str(Path(path).expanduser().resolve()))


def build_pipeline(settings: Mapping[str, Any]) -> Any:
    """The same graph as train_pipeline.yaml: init model, two conversions, training on GPUs, scoring."""
    from azure.ai.ml import PyTorchDistribution, dsl, load_component
    from azure.ai.ml.entities import JobResourceConfiguration

    resnet = load_component(source=COMPONENTS["resnet"])
    convert = load_component(source=COMPONENTS["convert"])
    train_component = load_component(source=COMPONENTS["train"])
    score_component = load_component(source=COMPONENTS["score"])

    @dsl.pipeline(
        name="train_pytorch_model_pipeline",
        display_name=f"Train PyTorch Model ({settings['model_name']})",
        description="Init Image Model -> Convert to Image Directory -> Train PyTorch Model -> Score Image Model",
        default_compute=settings["default_compute"],
    )
    # No annotations on the parameters: the dsl reads them as input types, and the values passed below
    # already give each input its type (uri_folder, integer, number).
    def image_classification(
        training_images, validation_images, epochs, batch_size, learning_rate, random_seed, patience
    ):
        # Node names come from the variable names; they match the YAML's job names.
        init_model = resnet(
            model_name=settings["model_name"], pretrained=settings["pretrained"], zero_init_residual=False
        )
        convert_training = convert(input_dataset=training_images)
        convert_validation = convert(input_dataset=validation_images)
        train = train_component(
            untrained_model=init_model.outputs.untrained_model,
            training_dataset=convert_training.outputs.output_dataset,
            validation_dataset=convert_validation.outputs.output_dataset,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            random_seed=random_seed,
            patience=patience,
        )
        train.compute = settings["train_compute"]
        # One process per GPU on each node; instance_count nodes.
        train.distribution = PyTorchDistribution(process_count_per_instance=settings["process_count_per_instance"])
        train.resources = JobResourceConfiguration(instance_count=settings["instance_count"])
        score = score_component(
            trained_model=train.outputs.trained_model, dataset=convert_validation.outputs.output_dataset
        )
        return {"trained_model": train.outputs.trained_model, "scored_dataset": score.outputs.scored_dataset}

    job = image_classification(
        training_images=_data_input(str(settings["training_images"])),
        validation_images=_data_input(str(settings["validation_images"])),
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        random_seed=settings["random_seed"],
        patience=settings["patience"],
    )
    job.experiment_name = settings["experiment_name"]
    return job


# The sweep of sweep_pipeline.yaml: the same search space, objective, policy and limits.
SWEEP = {
    "epochs": 15,
    "patience": 5,
    "learning_rate": (-9.21, -2.30),  # loguniform: e^-9.21 = 1e-4 to e^-2.30 = 0.1
    "batch_size": [16, 32, 64],
    "augmentation": ["none", "light", "strong"],
    "label_smoothing": [0.0, 0.1],
    "primary_metric": "valid_accuracy",  # logged by the trainer after every epoch
    "limits": {"max_total_trials": 16, "max_concurrent_trials": 4, "timeout": 14400},
}


def build_sweep_pipeline(settings: Mapping[str, Any]) -> Any:
    """The same graph as sweep_pipeline.yaml: init model, then a sweep whose trial is Train PyTorch Model."""
    from azure.ai.ml import dsl, load_component
    from azure.ai.ml.sweep import BanditPolicy, Choice, LogUniform

    resnet = load_component(source=COMPONENTS["resnet"])
    train_component = load_component(source=COMPONENTS["train"])

    @dsl.pipeline(
        name="train_pytorch_model_sweep",
        display_name="Train PyTorch Model, learning rate, batch size and recipe swept",
        default_compute=settings["default_compute"],
    )
    def image_classification_sweep(training_dataset, validation_dataset):
        init_model = resnet(model_name=settings["model_name"], pretrained=settings["pretrained"])
        trial = train_component(
            untrained_model=init_model.outputs.untrained_model,
            training_dataset=training_dataset,
            validation_dataset=validation_dataset,
            epochs=SWEEP["epochs"],
            patience=SWEEP["patience"],
            random_seed=settings["random_seed"],
            learning_rate=LogUniform(*SWEEP["learning_rate"]),
            batch_size=Choice(SWEEP["batch_size"]),
            augmentation=Choice(SWEEP["augmentation"]),
            label_smoothing=Choice(SWEEP["label_smoothing"]),
        )
        sweep = trial.sweep(
            primary_metric=SWEEP["primary_metric"],
            goal="maximize",
            sampling_algorithm="random",
            early_termination_policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=3),
        )
        sweep.compute = settings["train_compute"]
        sweep.set_limits(**SWEEP["limits"])
        return {"trained_model": sweep.outputs.trained_model}

    job = image_classification_sweep(
        training_dataset=_data_input(str(settings["training_images"])),
        validation_dataset=_data_input(str(settings["validation_images"])),
    )
    job.experiment_name = f"{settings['experiment_name']}_sweep"
    return job


def validate_offline(job: Any, settings: Mapping[str, Any]) -> list[str]:
    """Errors found by azure-ai-ml without a workspace: each component, then the pipeline graph.

    ``components.validate(skip_remote_validation=True)`` is fully local. ``jobs.validate`` is not: after its
    local checks it asks the workspace for every compute, which needs a token and the network; so the
    pipeline gets the same local checks (``PipelineJob._validate``) without the compute lookup.
    """
    from azure.ai.ml import load_component

    from train_pytorch_model.local.offline_credential import OfflineCredential, offline_ml_client

    credential = OfflineCredential()
    client = offline_ml_client(
        credential,
        subscription_id=settings["subscription_id"],
        resource_group=settings["resource_group"],
        workspace_name=settings["workspace_name"],
    )
    errors: list[str] = []
    for name, path in COMPONENTS.items():
        result = client.components.validate(load_component(source=path), skip_remote_validation=True)
        errors.extend(f"component {name} ({path.name}): {message}" for message in result.error_messages.values())
    result = job._validate()  # the local half of jobs.validate; see the docstring.
    errors.extend(f"pipeline {where}: {message}" for where, message in result.error_messages.items())
    if credential.calls:
        errors.append(f"offline validation asked for a token {credential.calls} time(s)")
    return errors


def submit(job: Any, settings: Mapping[str, Any], stream: bool) -> Any:
    """Submit with the caller's Azure identity (az login, managed identity, environment variables, ...)."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    client = MLClient(
        DefaultAzureCredential(),
        subscription_id=settings["subscription_id"],
        resource_group_name=settings["resource_group"],
        workspace_name=settings["workspace_name"],
    )
    submitted = client.jobs.create_or_update(job, experiment_name=settings["experiment_name"])
    print(f"Submitted {submitted.name}: {submitted.studio_url}")
    if stream:
        client.jobs.stream(submitted.name)
    return submitted


def main(argv: Sequence[str] | None = None) -> int:
    """Build the pipeline; with --dry-run validate it offline and print it, else submit it."""
    args = parse_args(argv)
    try:
        settings = resolve_settings(args)
        job = build_sweep_pipeline(settings) if args.sweep else build_pipeline(settings)
    except (ValueError, OSError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        errors = validate_offline(job, settings)
        print(f"# Would submit to workspace {settings['workspace_name']} (resource group {settings['resource_group']})")
        print(job._to_yaml())  # the SDK's own serialization of what would be sent.
        if errors:
            print("\n".join(f"error: {message}" for message in errors), file=sys.stderr)
            return 1
        print("# Offline validation passed (components and pipeline); nothing was submitted.", file=sys.stderr)
        return 0
    submit(job, settings, args.stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
