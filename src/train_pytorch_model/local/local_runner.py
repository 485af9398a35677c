"""Run a component YAML or a whole Azure ML pipeline job YAML on this machine, step by step.

    python -m train_pytorch_model.local.local_runner pipelines/train_pipeline.yaml \\
        --input training_images=data/train --input validation_images=data/valid \\
        [--set jobs.init_model.inputs.pretrained=false] [--output trained_model=DIR] \\
        [--workdir runs/local] [--dry-run]

Why this exists: a pipeline YAML is only checked for real when Azure ML runs it, minutes after a submission
and on paid compute. Running the same file locally, with each step's ``command`` rendered by
:mod:`train_pytorch_model.local.command_line` exactly as Azure ML renders it, catches a wrong binding, a missing
input or a step that fails on real data in seconds, with no workspace.

What it does with a pipeline job YAML (``type: pipeline``):

- ``--set KEY=VALUE`` edits the loaded YAML at a dotted path first, as ``az ml job create --set`` does (the
  value is read as a YAML scalar, so ``false`` is a boolean and ``3`` an integer);
- each job's ``component:`` is a YAML path relative to the pipeline file (``azureml:`` references name
  workspace assets, which do not exist locally: that is an error saying to use a file path);
- job inputs are bound from literals, ``${{parent.inputs.X}}`` (the pipeline's inputs, overridden by
  ``--input X=VALUE``) and ``${{parent.jobs.STEP.outputs.Y}}``;
- every step output gets a folder ``<workdir>/<step>/<output>``, except one bound to
  ``${{parent.outputs.Z}}`` with ``--output Z=PATH``, which goes to PATH;
- the steps run in dependency order; a cycle, an unknown step or output, or a required input without a value
  fails, naming the step and input, before anything runs;
- compute, distribution and resources are ignored (one local process per step), and the log says so.

A component YAML (``type: command``) is run by :func:`~train_pytorch_model.local.command_line.run_component`, with
``--input``/``--output`` bound to its own inputs and outputs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .command_line import (
    ComponentSpecError,
    UnboundInputError,
    UnboundOutputError,
    check_input_values,
    load_component_spec,
    parse_pairs,
    render_command,
    run_component,
)

__all__ = ["PipelineError", "Step", "apply_overrides", "main", "mlflow_environment", "plan_pipeline", "run_pipeline"]

# A whole value that is one binding: ${{parent.inputs.X}}, ${{parent.outputs.X}}, ${{parent.jobs.S.outputs.Y}}.
_PARENT_BINDING = re.compile(
    r"^\s*\$\{\{\s*parent\.(?:(inputs|outputs)\.([A-Za-z_][\w]*)|jobs\.([A-Za-z_][\w]*)\.outputs\.([A-Za-z_][\w]*))"
    r"\s*\}\}\s*$"
)
_PRIMITIVE_TYPES = frozenset({"integer", "number", "boolean", "string"})
# Settings that only mean something on Azure ML; reported once per step, then ignored.
_REMOTE_ONLY_KEYS = ("compute", "distribution", "resources", "queue_settings", "limits")


class PipelineError(ValueError):
    """The pipeline cannot run locally as written; raised before any step has started."""


@dataclass
class Step:
    """One pipeline job, resolved: its component, its bound inputs and output folders, its command."""

    name: str
    component_path: Path
    spec: dict[str, Any]
    inputs: dict[str, object] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    environment_variables: dict[str, str] = field(default_factory=dict)
    pipeline_outputs: dict[str, str] = field(default_factory=dict)  # step output -> ${{parent.outputs.Z}}
    command: str = ""


@dataclass(frozen=True)
class _StepOutput:
    """A reference to another step's output, kept unresolved until that step's folders are assigned."""

    step: str
    output: str


def _parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    try:
        return {name.strip(): value for name, value in parse_pairs(pairs, what).items()}
    except argparse.ArgumentTypeError as error:
        raise PipelineError(str(error)) from error


def _scalar(text: str) -> object:
    """Read a --set value as YAML does (``false``, ``3``, ``0.1``), but never as a mapping or list."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


def apply_overrides(document: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Set dotted paths in the loaded YAML (``jobs.train.inputs.epochs=1``) as ``az ml job create --set`` does.

    Missing intermediate mappings are created; walking through a value that is not a mapping is an error
    rather than a silent replacement, because it nearly always means a typo in the path.
    """
    for key, text in overrides.items():
        parts = key.split(".")
        node: Any = document
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise PipelineError(f"--set {key}: {'.'.join(parts[: depth + 1])} is not a mapping")
            node = child
        node[parts[-1]] = _scalar(text)
    return document


def _pipeline_input_value(name: str, value: object, base: Path) -> object:
    """A pipeline-level input's local value: a literal, or a data input's ``path`` (relative to the YAML)."""
    if isinstance(value, dict):
        if "path" in value:
            path = value["path"]
            kind = value.get("type", "uri_folder")
            if isinstance(path, str) and kind not in _PRIMITIVE_TYPES:
                return _local_data_path(name, path, base)
            return path
        for key in ("value", "default"):
            if key in value:
                return value[key]
        return None
    return value


def _local_data_path(name: str, path: str, base: Path) -> object:
    """Resolve a data path against the YAML's folder; keep remote URIs, which fail only if a step uses them."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    if re.match(r"^[A-Za-z][\w+.-]*:", path) and not re.match(r"^[A-Za-z]:[\\/]", path):
        return _RemotePath(name, path)
    return (base / Path(path).expanduser()).absolute()


@dataclass(frozen=True)
class _RemotePath:
    """A workspace or cloud path (azureml:, azureml://, https://) that has no meaning on this machine."""

    input_name: str
    uri: str


def _resolve_component(step: str, job: Mapping[str, Any], base: Path) -> Path:
    component = job.get("component")
    if not isinstance(component, str) or not component.strip():
        raise PipelineError(f"step {step!r}: 'component' must be the path of a component YAML")
    if component.startswith("azureml:"):
        raise PipelineError(
            f"step {step!r}: component {component!r} is a workspace asset, which cannot be resolved locally; "
            "use a file path to the component YAML (e.g. component: ../component.yaml)"
        )
    path = (base / component).resolve()
    if not path.is_file():
        raise PipelineError(f"step {step!r}: component file {path} does not exist")
    return path


def _job_value(step: str, input_name: str, raw: object, pipeline_inputs: Mapping[str, object], base: Path) -> object:
    """Bind one job input: a literal, a data path (relative to the YAML, like a pipeline input's), a parent
    input, or a reference to another step's output."""
    data_path = False
    if isinstance(raw, dict):  # {type: uri_folder, path: ${{parent...}}, mode: ...} or {value: ...}
        for key in ("path", "value", "default"):
            if key in raw:
                data_path = key == "path" and raw.get("type") not in _PRIMITIVE_TYPES
                raw = raw[key]
                break
        else:
            return None
    if not isinstance(raw, str) or "${{" not in raw:
        return _local_data_path(f"{step}.{input_name}", raw, base) if data_path and isinstance(raw, str) else raw
    match = _PARENT_BINDING.match(raw)
    if not match:
        raise PipelineError(
            f"step {step!r}, input {input_name!r}: {raw!r} is not a binding the local runner understands "
            "(${{parent.inputs.X}} or ${{parent.jobs.STEP.outputs.Y}} as the whole value)"
        )
    kind, name, other_step, other_output = match.groups()
    if other_step:
        return _StepOutput(other_step, other_output)
    if kind == "outputs":
        raise PipelineError(f"step {step!r}, input {input_name!r}: an input cannot read ${{{{parent.outputs.{name}}}}}")
    if name not in pipeline_inputs:
        raise PipelineError(
            f"step {step!r}, input {input_name!r}: the pipeline has no input {name!r} "
            f"(it declares {', '.join(map(repr, pipeline_inputs)) or 'none'})"
        )
    return pipeline_inputs[name]


def _topological_order(steps: Mapping[str, Step]) -> list[str]:
    """Steps in dependency order, ties broken by YAML order so that runs are repeatable; cycles named."""
    remaining = {name: set(step.depends_on) for name, step in steps.items()}
    order: list[str] = []
    while remaining:
        ready = [name for name, needs in remaining.items() if not needs]
        if not ready:
            raise PipelineError(
                f"the steps {', '.join(map(repr, _find_cycle(remaining)))} depend on each other in a cycle"
            )
        for name in ready:
            order.append(name)
            del remaining[name]
        for needs in remaining.values():
            needs.difference_update(ready)
    return order


def _find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle of the (all-blocked) remaining graph, as a path that ends where it starts."""
    start = next(iter(graph))
    seen: list[str] = [start]
    node = start
    while True:
        node = sorted(graph[node])[0]
        if node in seen:
            return [*seen[seen.index(node) :], node]
        seen.append(node)


def plan_pipeline(
    path: str | os.PathLike[str],
    *,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    workdir: str | os.PathLike[str] = "runs/local",
) -> list[Step]:
    """Resolve every step of a pipeline job YAML and render its command, without running anything.

    Everything that can be wrong with the file locally is found here, so that a bad binding fails before the
    first (possibly long) step starts. ``inputs``/``outputs`` are ``--input``/``--output`` strings; relative
    paths in them are taken relative to the current directory, relative paths in the YAML relative to it.
    """
    yaml_path = Path(path).absolute()
    document = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("type") != "pipeline":
        raise PipelineError(f"{yaml_path}: not a pipeline job YAML (type: pipeline)")
    apply_overrides(document, overrides or {})
    pipeline = _PipelineBindings(
        base=yaml_path.parent,
        work=Path(workdir).expanduser().absolute(),
        inputs=_pipeline_inputs(document, inputs or {}, yaml_path.parent),
        declared_outputs=document.get("outputs") or {},
        given_outputs=outputs or {},
    )
    unknown_outputs = sorted(set(pipeline.given_outputs) - set(pipeline.declared_outputs))
    if unknown_outputs:
        raise PipelineError(f"--output {unknown_outputs[0]}: the pipeline has no output {unknown_outputs[0]!r}")
    jobs = document.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        raise PipelineError(f"{yaml_path}: a pipeline needs a 'jobs' mapping with at least one step")
    steps = {name: _plan_step(name, job, pipeline) for name, job in jobs.items()}
    _check_step_references(steps)
    order = _topological_order(steps)
    for name in order:
        _render_step(steps[name], steps)
    return [steps[name] for name in order]


@dataclass(frozen=True)
class _PipelineBindings:
    """What every step of a pipeline binds against: the YAML's folder, the work folder, the pipeline's inputs
    (YAML values overridden by --input) and its outputs (declared, and the folders --output gives)."""

    base: Path
    work: Path
    inputs: dict[str, object]
    declared_outputs: Mapping[str, Any]
    given_outputs: Mapping[str, str]


def _pipeline_inputs(document: Mapping[str, Any], given: Mapping[str, str], base: Path) -> dict[str, object]:
    """The pipeline's inputs: the YAML's values, overridden by --input (data paths relative to the current
    folder, literals read as YAML scalars)."""
    declared = document.get("inputs") or {}
    values = {name: _pipeline_input_value(name, value, base) for name, value in declared.items()}
    for name, value in given.items():
        if name not in declared:
            raise PipelineError(
                f"--input {name}: the pipeline has no input {name!r} "
                f"(it declares {', '.join(map(repr, declared)) or 'none'})"
            )
        kind = declared[name].get("type") if isinstance(declared[name], dict) else None
        is_data = kind is not None and kind not in _PRIMITIVE_TYPES
        values[name] = Path(value).expanduser().absolute() if is_data else _scalar(value)
    return values


def _plan_step(name: str, job: object, pipeline: _PipelineBindings) -> Step:
    """One job: its component loaded, its inputs bound (other steps' outputs still as references) and its
    output folders assigned."""
    if not isinstance(job, dict):
        raise PipelineError(f"step {name!r}: expected a mapping")
    if job.get("type", "command") != "command":
        raise PipelineError(f"step {name!r}: only command steps run locally, not type {job.get('type')!r}")
    component_path = _resolve_component(name, job, pipeline.base)
    try:
        spec = load_component_spec(component_path)
    except (ComponentSpecError, OSError, yaml.YAMLError) as error:
        raise PipelineError(f"step {name!r}: {error}") from error
    step = Step(name, component_path, spec)
    step.ignored = [key for key in _REMOTE_ONLY_KEYS if job.get(key) is not None]
    step.environment_variables = {str(k): str(v) for k, v in (job.get("environment_variables") or {}).items()}
    component_inputs = spec.get("inputs") or {}
    for input_name, raw in (job.get("inputs") or {}).items():
        if input_name not in component_inputs:
            raise PipelineError(
                f"step {name!r}: the component has no input {input_name!r} "
                f"(it declares {', '.join(map(repr, component_inputs)) or 'none'})"
            )
        value = _job_value(name, input_name, raw, pipeline.inputs, pipeline.base)
        if isinstance(value, _StepOutput) and value.step not in step.depends_on:
            step.depends_on.append(value.step)
        step.inputs[input_name] = value
    _assign_outputs(step, job.get("outputs") or {}, pipeline)
    return step


def _assign_outputs(step: Step, bound: Mapping[str, Any], pipeline: _PipelineBindings) -> None:
    """Every output gets <workdir>/<step>/<output>, except one bound to ${{parent.outputs.Z}} that --output
    gives a folder."""
    component_outputs = step.spec.get("outputs") or {}
    for output_name in component_outputs:
        step.outputs[output_name] = pipeline.work / step.name / output_name
    for output_name, raw in bound.items():
        if output_name not in component_outputs:
            raise PipelineError(f"step {step.name!r}: the component has no output {output_name!r}")
        binding = raw.get("path") if isinstance(raw, dict) else raw
        match = _PARENT_BINDING.match(binding) if isinstance(binding, str) else None
        if not (match and match.group(1) == "outputs"):
            continue
        parent_output = match.group(2)
        step.pipeline_outputs[output_name] = parent_output
        if parent_output not in pipeline.declared_outputs:
            raise PipelineError(f"step {step.name!r}, output {output_name!r}: no pipeline output {parent_output!r}")
        if parent_output in pipeline.given_outputs:
            step.outputs[output_name] = Path(pipeline.given_outputs[parent_output]).expanduser().absolute()


def _check_step_references(steps: Mapping[str, Step]) -> None:
    """Every ${{parent.jobs.S.outputs.Y}} names a step that exists and an output it has."""
    for step in steps.values():
        for input_name, value in step.inputs.items():
            if not isinstance(value, _StepOutput):
                continue
            if value.step not in steps:
                raise PipelineError(f"step {step.name!r}, input {input_name!r}: there is no step {value.step!r}")
            if value.output not in steps[value.step].outputs:
                raise PipelineError(
                    f"step {step.name!r}, input {input_name!r}: step {value.step!r} has no output {value.output!r}"
                )


def _render_step(step: Step, steps: Mapping[str, Step]) -> None:
    """Resolve the step's references to earlier steps' folders, check its values, render its command."""
    for input_name, value in list(step.inputs.items()):
        if isinstance(value, _StepOutput):
            step.inputs[input_name] = steps[value.step].outputs[value.output]
    _check_bound(step)
    local = {key: value for key, value in step.inputs.items() if not isinstance(value, _RemotePath)}
    problems = check_input_values(step.spec, local)
    if problems:
        raise PipelineError(f"step {step.name!r}: {'; '.join(problems)}")
    try:
        step.command = render_command(step.spec, step.inputs, step.outputs)
    except (UnboundInputError, UnboundOutputError, ComponentSpecError) as error:
        raise PipelineError(f"step {step.name!r}: {error}") from error


def _check_bound(step: Step) -> None:
    """Fail on a required input with no value and no default, and on a cloud path a step would read."""
    for input_name, definition in (step.spec.get("inputs") or {}).items():
        definition = definition or {}
        value = step.inputs.get(input_name)
        if isinstance(value, _RemotePath):
            if "." in value.input_name:  # a path written in the job itself, not a pipeline input
                where, fix = "", f"--set jobs.{step.name}.inputs.{input_name}.path=PATH"
            else:
                where, fix = f" (pipeline input {value.input_name!r})", f"--input {value.input_name}=PATH"
            raise PipelineError(
                f"step {step.name!r}, input {input_name!r}: {value.uri!r}{where} is a workspace or cloud path; "
                f"give a local folder with {fix}"
            )
        if value is None and definition.get("default") is None and not definition.get("optional"):
            raise PipelineError(
                f"step {step.name!r}, input {input_name!r}: required input has no value and no default; "
                "bind it in the pipeline YAML, or pass it with --input/--set"
            )


def run_pipeline(steps: Sequence[Step], *, env: Mapping[str, str] | None = None) -> int:
    """Run planned steps in order, each as :func:`run_component` runs a component; stop at the first failure."""
    for index, step in enumerate(steps, 1):
        print(f"[{index}/{len(steps)}] {step.name}: {step.component_path}", flush=True)
        if step.ignored:
            print(
                f"  ignoring {', '.join(step.ignored)} locally: the step runs as one process on this machine",
                flush=True,
            )
        print(f"  $ {step.command}", flush=True)
        step_env = {**(env or {}), **step.environment_variables}
        started = time.monotonic()
        result = run_component(step.component_path, step.inputs, step.outputs, env=step_env, check=False)
        if result.returncode != 0:
            print(f"error: step {step.name!r} failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
        print(f"  {step.name} done in {time.monotonic() - started:.1f}s", flush=True)
    return 0


def mlflow_environment(workdir: Path, experiment_name: str | None) -> dict[str, str]:
    """MLflow settings for local steps, standing in for the ones Azure ML gives each job.

    Without them a step would create ``./mlflow.db`` in its working directory, which is the component's code
    folder (the source tree); values already set in the environment win, so a shared server still works.
    """
    env = {"MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workdir / 'mlflow.db'}"}
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment_name
    if experiment:
        env["MLFLOW_EXPERIMENT_NAME"] = experiment
    return env


def _summary(steps: Sequence[Step]) -> str:
    lines = ["Step outputs:"]
    for step in steps:
        for name, path in step.outputs.items():
            files = sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
            parent = step.pipeline_outputs.get(name)
            label = f" = pipeline output {parent}" if parent else ""
            lines.append(f"  {step.name}.{name}{label}: {path} ({files} files)")
    return "\n".join(lines)


def _is_pipeline(path: Path) -> bool:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return isinstance(document, dict) and document.get("type") == "pipeline"


def _run_single_component(
    path: Path, inputs: Mapping[str, str], outputs: Mapping[str, str], workdir: Path, dry_run: bool
) -> int:
    """A component YAML: bind --input/--output (outputs default under workdir) and delegate to run_component."""
    spec = load_component_spec(path)
    name = str(spec.get("name") or path.stem)
    bound_outputs: dict[str, Path] = {
        output: (workdir / name / output).absolute() for output in (spec.get("outputs") or {})
    }
    bound_outputs.update({output: Path(value).expanduser().absolute() for output, value in outputs.items()})
    declared = spec.get("inputs") or {}
    bound_inputs: dict[str, object] = {}
    for input_name, value in inputs.items():
        kind = (declared.get(input_name) or {}).get("type")
        is_local = kind not in _PRIMITIVE_TYPES and "://" not in value
        bound_inputs[input_name] = Path(value).expanduser().absolute() if is_local else value
    problems = check_input_values(spec, bound_inputs)
    if problems:
        raise PipelineError(f"{path}: {'; '.join(problems)}")
    print(f"$ {render_command(spec, bound_inputs, bound_outputs)}", flush=True)
    if dry_run:
        return 0
    workdir = workdir.expanduser().absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    result = run_component(path, bound_inputs, bound_outputs, env=mlflow_environment(workdir, None), check=False)
    if result.returncode == 0:
        print("\n".join(f"  {output}: {folder}" for output, folder in bound_outputs.items()))
    return result.returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Plan and run a pipeline job YAML (or run one component YAML) locally; 2 on a planning error."""
    parser = argparse.ArgumentParser(
        prog="python -m train_pytorch_model.local.local_runner",
        description="Run an Azure ML component or pipeline job YAML on this machine, as Azure ML would.",
    )
    parser.add_argument("file", help="a component YAML (type: command) or a pipeline job YAML (type: pipeline)")
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=VALUE", help="bind a pipeline (or component) input"
    )
    parser.add_argument(
        "--output", action="append", default=[], metavar="NAME=PATH", help="bind a pipeline (or component) output"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipelines: edit the YAML at a dotted path, as az ml job create --set does "
        "(jobs.init_model.inputs.pretrained=false)",
    )
    parser.add_argument("--workdir", default="runs/local", help="where step outputs go: WORKDIR/STEP/OUTPUT")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and commands without running")
    args = parser.parse_args(argv)
    path = Path(args.file)
    workdir = Path(args.workdir)
    try:
        inputs = _parse_pairs(args.input, "input")
        outputs = _parse_pairs(args.output, "output")
        overrides = _parse_pairs(args.overrides, "set")
        if not _is_pipeline(path):
            if overrides:
                raise PipelineError("--set applies to pipeline job YAMLs only")
            return _run_single_component(path, inputs, outputs, workdir, args.dry_run)
        steps = plan_pipeline(path, inputs=inputs, outputs=outputs, overrides=overrides, workdir=workdir)
    except (ValueError, OSError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Pipeline {path}: {len(steps)} steps in order: {' -> '.join(step.name for step in steps)}", flush=True)
    if args.dry_run:
        for step in steps:
            ignored = f" (ignored locally: {', '.join(step.ignored)})" if step.ignored else ""
            print(f"{step.name}{ignored}:\n  $ {step.command}")
        return 0
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    experiment = overrides.get("experiment_name") or document.get("experiment_name")
    workdir_abs = workdir.expanduser().absolute()
    workdir_abs.mkdir(parents=True, exist_ok=True)
    print(f"Workdir {workdir_abs}; MLflow: {mlflow_environment(workdir_abs, experiment)['MLFLOW_TRACKING_URI']}")
    code = run_pipeline(steps, env=mlflow_environment(workdir_abs, experiment))
    if code == 0:
        print(_summary(steps), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
