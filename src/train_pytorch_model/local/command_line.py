"""Render and run an Azure ML command component's ``command`` the way Azure ML does.

Why this exists: the component's real interface is the ``command`` line in ``component.yaml``, not the
trainer's argparse. Rendering that line locally, with Azure ML's rules, lets tests and developers run the
component exactly as a pipeline step would (same flags, same optional groups, same defaults) without a
workspace, and catches a mismatch between the YAML and the trainer before a cloud run does.

The rules reproduced here:

- ``${{inputs.NAME}}`` and ``${{outputs.NAME}}`` are replaced by the bound value or path.
- ``$[[ ... ]]`` is an optional group: it is kept, without its brackets, only when every input it
  references is bound, and dropped otherwise.
- An input that is not given but has a ``default`` in the spec is bound to that default.
- An input that is neither given nor defaulted is unbound: that is only allowed for an ``optional`` input
  inside an optional group; anything else raises :class:`UnboundInputError`.
- Booleans render as Azure ML renders them (``True`` / ``False``); numbers and strings render as given.

One deliberate difference: Azure ML pastes values in verbatim, because its values are mount paths and
numbers that never need quoting. Local paths can hold spaces or non-ASCII characters, so values are passed
through :func:`shlex.quote`, which leaves ordinary values untouched.

Usage from the shell::

    python -m train_pytorch_model.local.command_line component.yaml \\
        --input untrained_model=./model --input training_dataset=./train \\
        --input validation_dataset=./val --output trained_model=./out --dry-run
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ComponentSpecError",
    "UnboundInputError",
    "UnboundOutputError",
    "load_component_spec",
    "main",
    "render_command",
    "run_component",
]

# ${{inputs.name}} / ${{outputs.name}}; Azure ML tolerates spaces inside the braces.
_BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# $[[ ... ]] with the blanks in front of it; Azure ML does not nest optional groups, so the shortest
# match is the group.
_OPTIONAL_GROUP = re.compile(r"([ \t]*)\$\[\[(.*?)\]\]", re.DOTALL)
# A leading ``python`` / ``python3`` word, replaced by the running interpreter when run locally.
_LEADING_PYTHON = re.compile(r"^(\s*)python3?(?=\s|$)")

# Input types whose values are numbers, strings or booleans. Every other type (uri_folder, uri_file,
# mlflow_model, ...) names data, which locally means a path.
_PRIMITIVE_TYPES = frozenset({"integer", "number", "boolean", "string"})


class ComponentSpecError(ValueError):
    """The component YAML, or the command in it, is not something Azure ML would accept."""


class UnboundInputError(ValueError):
    """A required input has no value and no default, so the command cannot be rendered.

    Raised instead of rendering a command with a hole in it, which would fail later with a confusing
    argparse message from the trainer.
    """

    def __init__(self, name: str, reason: str = "") -> None:
        self.name = name
        message = f"input {name!r} has no value and no default"
        if reason:
            message = f"{message}: {reason}"
        super().__init__(message)


class UnboundOutputError(ValueError):
    """The command writes to an output that was given no path."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"output {name!r} is used by the command but was given no path")


def load_component_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a command component YAML into a plain dict.

    Plain PyYAML rather than azure-ai-ml, so that rendering and running a component locally needs
    neither the Azure SDK nor a workspace.
    """
    text = Path(path).read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ComponentSpecError(f"{path}: expected a YAML mapping, got {type(spec).__name__}")
    if not isinstance(spec.get("command"), str):
        raise ComponentSpecError(f"{path}: a command component needs a 'command' string")
    return spec


def input_value_problem(definition: Mapping[str, Any], value: object) -> str | None:
    """What is wrong with a value for a component input of this definition, or None when it fits: its type, its
    enum, its min and max, an empty path. Azure ML refuses a wrong type or enum value at submission; min and max
    it leaves to the component, but a local run checks them too, so that a pipeline fails before its first step
    rather than in its third."""
    if value is None:
        return None
    kind = str(definition.get("type", "string"))
    text = (os.fspath(value) if isinstance(value, os.PathLike) else str(value)).strip()
    if kind not in ("integer", "number", "boolean", "string"):  # a data input: a folder, file or URI
        return "is empty; give a folder or file" if not text else None
    if kind == "boolean":
        if not isinstance(value, bool) and text.lower() not in ("true", "false"):
            return f"is {value!r}, not true or false"
        return None
    number: float | None = None
    if kind == "integer":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            return f"is {value!r}, not an integer"
        try:
            number = int(value) if isinstance(value, (int, float)) else int(text)
        except ValueError:
            return f"is {value!r}, not an integer"
    elif kind == "number":
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not math.isfinite(number):
            return f"is {value!r}, not a finite number"
    enum = definition.get("enum")
    if enum is not None and text not in {str(option) for option in enum}:
        return f"is {value!r}, not one of {', '.join(map(str, enum))}"
    if number is not None:
        if definition.get("min") is not None and number < float(definition["min"]):
            return f"is {value!r}, below the minimum {definition['min']}"
        if definition.get("max") is not None and number > float(definition["max"]):
            return f"is {value!r}, above the maximum {definition['max']}"
    return None


def check_input_values(spec: Mapping[str, Any], inputs: Mapping[str, object]) -> list[str]:
    """One message per bound input whose value does not fit its definition (see input_value_problem)."""
    declared = _declared(spec, "inputs")
    problems = []
    for name, value in inputs.items():
        problem = input_value_problem(declared.get(name) or {}, value)
        if problem:
            problems.append(f"input {name!r} {problem}")
    return problems


def _format_value(value: object) -> str:
    """Render one value as Azure ML does, shell-quoted so local paths survive ``bash -c``."""
    if isinstance(value, bool):
        text = "True" if value else "False"
    elif isinstance(value, os.PathLike):
        text = os.fspath(value)
    else:
        text = str(value)
    return shlex.quote(text)


def _declared(spec: Mapping[str, Any], section: str) -> dict[str, dict[str, Any]]:
    declared = spec.get(section) or {}
    if not isinstance(declared, dict):
        raise ComponentSpecError(f"'{section}' must be a mapping of names to definitions")
    return {name: (definition or {}) for name, definition in declared.items()}


def _bound_inputs(spec: Mapping[str, Any], inputs: Mapping[str, object]) -> dict[str, object]:
    """Values of the inputs that are bound: given (not None), else defaulted in the spec."""
    declared = _declared(spec, "inputs")
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise ComponentSpecError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; the component declares "
            f"{', '.join(map(repr, declared)) or 'no inputs'}"
        )
    bound: dict[str, object] = {}
    for name, definition in declared.items():
        if inputs.get(name) is not None:
            bound[name] = inputs[name]
        elif definition.get("default") is not None:
            bound[name] = definition["default"]
    return bound


def render_command(
    spec: Mapping[str, Any],
    inputs: Mapping[str, object],
    outputs: Mapping[str, str | os.PathLike[str]],
) -> str:
    """Return the shell command Azure ML would run for ``spec`` with these inputs and outputs.

    ``inputs`` maps input names to values (None means not given); ``outputs`` maps output names to paths.
    Raises :class:`UnboundInputError` when a required input has neither a value nor a default,
    :class:`UnboundOutputError` when a used output has no path, and :class:`ComponentSpecError` when the
    command references something the spec does not declare.
    """
    command = spec.get("command")
    if not isinstance(command, str):
        raise ComponentSpecError("a command component needs a 'command' string")
    declared_inputs = _declared(spec, "inputs")
    declared_outputs = _declared(spec, "outputs")
    unknown_outputs = sorted(set(outputs) - set(declared_outputs))
    if unknown_outputs:
        raise ComponentSpecError(f"unknown output(s) {', '.join(map(repr, unknown_outputs))}")
    bound = _bound_inputs(spec, inputs)

    def check_declared(kind: str, name: str) -> None:
        names = declared_inputs if kind == "inputs" else declared_outputs
        if name not in names:
            raise ComponentSpecError(f"the command references ${{{{{kind}.{name}}}}}, which is not declared")

    def expand_group(match: re.Match[str]) -> str:
        blanks, body = match.group(1), match.group(2)
        for kind, name in _BINDING.findall(body):
            check_declared(kind, name)
            if kind == "inputs" and name not in bound:
                if declared_inputs[name].get("optional"):
                    return ""  # An unbound optional input drops its whole group.
                raise UnboundInputError(name, "it is not optional, so it must be given even inside $[[...]]")
        return blanks + body

    # Groups first, on the template, so that dropping one never touches a substituted value; the blanks
    # in front of a dropped group go with it, so that no double space is left behind.
    template = _OPTIONAL_GROUP.sub(expand_group, command)

    def substitute(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        check_declared(kind, name)
        if kind == "inputs":
            if name not in bound:
                hint = (
                    "wrap it in $[[...]] so that it can be left out"
                    if declared_inputs[name].get("optional")
                    else "give it a value"
                )
                raise UnboundInputError(name, hint)
            return _format_value(bound[name])
        if outputs.get(name) is None:
            raise UnboundOutputError(name)
        return _format_value(outputs[name])

    return _BINDING.sub(substitute, template).strip()


def _absolute_paths(
    spec: Mapping[str, Any], inputs: Mapping[str, object], outputs: Mapping[str, str | os.PathLike[str]]
) -> tuple[dict[str, object], dict[str, Path]]:
    """Make data inputs and outputs absolute, because the command runs in the code folder, not here."""
    declared_inputs = _declared(spec, "inputs")
    absolute_inputs: dict[str, object] = {}
    for name, value in inputs.items():
        kind = declared_inputs.get(name, {}).get("type")
        is_local_path = isinstance(value, os.PathLike) or (isinstance(value, str) and "://" not in value)
        if value is not None and kind not in _PRIMITIVE_TYPES and is_local_path:
            absolute_inputs[name] = Path(value).expanduser().absolute()  # type: ignore[arg-type]
        else:
            absolute_inputs[name] = value
    absolute_outputs = {name: Path(path).expanduser().absolute() for name, path in outputs.items()}
    return absolute_inputs, absolute_outputs


def run_component(
    path: str | os.PathLike[str],
    inputs: Mapping[str, object],
    outputs: Mapping[str, str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture_output: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Render the component's command and run it with ``bash -c``, as an Azure ML step would.

    The command runs in the component's ``code`` folder (resolved relative to the YAML) with that folder
    on PYTHONPATH, like on Azure ML where the code snapshot is the working directory. A leading ``python``
    becomes the running interpreter, so that the command uses this virtual environment. Output folders are
    created first, because Azure ML mounts them before the command starts. Relative data paths are taken
    relative to the current directory. ``env`` adds to (and overrides) the current environment.
    """
    yaml_path = Path(path).absolute()
    spec = load_component_spec(yaml_path)
    code = spec.get("code")
    code_dir = (yaml_path.parent / str(code)).resolve() if code else yaml_path.parent
    if not code_dir.is_dir():
        raise ComponentSpecError(f"{yaml_path}: code folder {code_dir} does not exist")

    absolute_inputs, absolute_outputs = _absolute_paths(spec, inputs, outputs)
    declared_outputs = _declared(spec, "outputs")
    command = render_command(spec, absolute_inputs, absolute_outputs)
    command = _LEADING_PYTHON.sub(lambda m: m.group(1) + shlex.quote(sys.executable), command, count=1)

    for name, output in absolute_outputs.items():
        if declared_outputs.get(name, {}).get("type", "uri_folder") == "uri_file":
            output.parent.mkdir(parents=True, exist_ok=True)
        else:
            output.mkdir(parents=True, exist_ok=True)

    run_env = dict(os.environ)
    if env:
        run_env.update(env)
    pythonpath = run_env.get("PYTHONPATH")
    run_env["PYTHONPATH"] = os.pathsep.join([str(code_dir), pythonpath] if pythonpath else [str(code_dir)])
    return subprocess.run(
        ["bash", "-c", command], cwd=code_dir, env=run_env, check=check, text=True, capture_output=capture_output
    )


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """NAME=VALUE options into a mapping; an empty value (an unset variable in a script) is refused."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"--{what} expects NAME=VALUE, got {pair!r}")
        if not value.strip():
            raise argparse.ArgumentTypeError(f"--{what} {name}= has no value (an unset variable?)")
        parsed[name] = value
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    """Print the rendered command of a component YAML and, unless --dry-run, run it."""
    parser = argparse.ArgumentParser(
        prog="python -m train_pytorch_model.local.command_line",
        description="Render (and run) an Azure ML command component's command as Azure ML does.",
    )
    parser.add_argument("component", help="path of the component YAML")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=VALUE", help="bind an input")
    parser.add_argument("--output", action="append", default=[], metavar="NAME=PATH", help="bind an output")
    parser.add_argument("--dry-run", action="store_true", help="print the command without running it")
    args = parser.parse_args(argv)
    try:
        inputs = parse_pairs(args.input, "input")
        outputs = parse_pairs(args.output, "output")
        if args.dry_run:
            print(render_command(load_component_spec(args.component), inputs, outputs))
            return 0
        spec = load_component_spec(args.component)
        absolute_inputs, absolute_outputs = _absolute_paths(spec, inputs, outputs)
        print(render_command(spec, absolute_inputs, absolute_outputs), flush=True)
        return run_component(args.component, inputs, outputs, check=False).returncode
    except (ValueError, OSError, argparse.ArgumentTypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
