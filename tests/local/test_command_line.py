"""The local renderer of an Azure ML component command (train_pytorch_model.local.command_line)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO_ROOT
from train_pytorch_model.local.command_line import (
    ComponentSpecError,
    UnboundInputError,
    UnboundOutputError,
    load_component_spec,
    main,
    render_command,
    run_component,
)

ROOT = REPO_ROOT


COMPONENT_YAML = ROOT / "component.yaml"


def spec(command: str, inputs: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None) -> dict:
    return {"type": "command", "command": command, "inputs": inputs or {}, "outputs": outputs or {}}


REQUIRED_DATA = {
    "untrained_model": "/mnt/model",
    "training_dataset": "/mnt/train",
    "validation_dataset": "/mnt/val",
}


# --- substitution -------------------------------------------------------------------------------------


def test_substitutes_inputs_and_outputs() -> None:
    s = spec(
        "run --in ${{inputs.data}} --n ${{inputs.n}} --out ${{outputs.model}}",
        {"data": {"type": "uri_folder"}, "n": {"type": "integer"}},
        {"model": {"type": "uri_folder"}},
    )
    assert render_command(s, {"data": "/d", "n": 3}, {"model": "/o"}) == "run --in /d --n 3 --out /o"


def test_tolerates_spaces_inside_braces() -> None:
    s = spec("echo ${{ inputs.n }}", {"n": {"type": "integer"}})
    assert render_command(s, {"n": 7}, {}) == "echo 7"


def test_booleans_render_as_azure_does() -> None:
    s = spec("run --a ${{inputs.a}} --b ${{inputs.b}}", {"a": {"type": "boolean"}, "b": {"type": "boolean"}})
    assert render_command(s, {"a": True, "b": False}, {}) == "run --a True --b False"


def test_numbers_render_as_given() -> None:
    s = spec("run ${{inputs.x}} ${{inputs.y}} ${{inputs.z}}", {k: {"type": "number"} for k in "xyz"})
    assert render_command(s, {"x": 0.001, "y": "1e-3", "z": 5e-324}, {}) == "run 0.001 1e-3 5e-324"


def test_paths_are_accepted() -> None:
    s = spec("run ${{inputs.d}} ${{outputs.o}}", {"d": {"type": "uri_folder"}}, {"o": {"type": "uri_folder"}})
    assert render_command(s, {"d": Path("/a/b")}, {"o": Path("/c")}) == "run /a/b /c"


@pytest.mark.parametrize("path", ["/data/my images", "/data/välidation", "/data/画像/train", "/d/it's"])
def test_paths_with_spaces_and_non_ascii_are_quoted(path: str) -> None:
    s = spec("run --in ${{inputs.d}} --out ${{outputs.o}}", {"d": {"type": "uri_folder"}}, {"o": {}})
    command = render_command(s, {"d": path}, {"o": path + "/out"})
    assert shlex.split(command) == ["run", "--in", path, "--out", path + "/out"]


def test_ordinary_values_are_not_quoted() -> None:
    s = spec("run ${{inputs.d}}", {"d": {"type": "uri_folder"}})
    assert render_command(s, {"d": "/mnt/azureml/cr/j/abc/cap/data-capability/wd/INPUT_d"}, {}) == (
        "run /mnt/azureml/cr/j/abc/cap/data-capability/wd/INPUT_d"
    )


def test_substituted_values_are_not_rescanned() -> None:
    s = spec("run ${{inputs.a}} ${{inputs.b}}", {"a": {"type": "string"}, "b": {"type": "string"}})
    command = render_command(s, {"a": "${{inputs.b}}", "b": "x"}, {})
    assert shlex.split(command) == ["run", "${{inputs.b}}", "x"]


# --- defaults and optional groups ---------------------------------------------------------------------


def test_defaults_bind_missing_inputs() -> None:
    s = spec("run --n ${{inputs.n}}", {"n": {"type": "integer", "default": 5}})
    assert render_command(s, {}, {}) == "run --n 5"
    assert render_command(s, {"n": None}, {}) == "run --n 5"
    assert render_command(s, {"n": 9}, {}) == "run --n 9"


def test_optional_group_kept_when_bound() -> None:
    s = spec("run $[[--size ${{inputs.size}}]] --x 1", {"size": {"type": "integer", "optional": True}})
    assert render_command(s, {"size": 224}, {}) == "run --size 224 --x 1"


def test_optional_group_dropped_when_unbound() -> None:
    s = spec("run $[[--size ${{inputs.size}}]] --x 1", {"size": {"type": "integer", "optional": True}})
    assert render_command(s, {}, {}) == "run --x 1"
    assert render_command(s, {"size": None}, {}) == "run --x 1"


def test_optional_group_at_the_end_leaves_no_trailing_blank() -> None:
    s = spec("run --x 1 $[[--size ${{inputs.size}}]]", {"size": {"type": "integer", "optional": True}})
    assert render_command(s, {}, {}) == "run --x 1"


def test_optional_group_with_default_is_kept() -> None:
    s = spec("run $[[--size ${{inputs.size}}]]", {"size": {"type": "integer", "optional": True, "default": 64}})
    assert render_command(s, {}, {}) == "run --size 64"


def test_group_needs_every_input_it_references() -> None:
    s = spec(
        "run $[[--a ${{inputs.a}} --b ${{inputs.b}}]]",
        {"a": {"type": "integer", "optional": True}, "b": {"type": "integer", "optional": True}},
    )
    assert render_command(s, {"a": 1}, {}) == "run"
    assert render_command(s, {"a": 1, "b": 2}, {}) == "run --a 1 --b 2"


def test_group_without_bindings_is_kept() -> None:
    assert render_command(spec("run $[[--verbose]]"), {}, {}) == "run --verbose"


def test_multiline_command() -> None:
    s = spec(
        "python train.py\n  --n ${{inputs.n}}\n  $[[--size ${{inputs.size}}]]\n  --out ${{outputs.o}}\n",
        {"n": {"type": "integer", "default": 2}, "size": {"type": "integer", "optional": True}},
        {"o": {"type": "uri_folder"}},
    )
    assert shlex.split(render_command(s, {}, {"o": "/o"})) == [
        "python",
        "train.py",
        "--n",
        "2",
        "--out",
        "/o",
    ]


# --- errors -------------------------------------------------------------------------------------------


def test_unbound_required_input_raises_naming_it() -> None:
    s = spec("run --in ${{inputs.data}}", {"data": {"type": "uri_folder"}})
    with pytest.raises(UnboundInputError, match="'data'") as info:
        render_command(s, {}, {})
    assert info.value.name == "data"
    assert isinstance(info.value, ValueError)


def test_unbound_required_input_inside_a_group_still_raises() -> None:
    s = spec("run $[[--in ${{inputs.data}}]]", {"data": {"type": "uri_folder"}})
    with pytest.raises(UnboundInputError, match="'data'"):
        render_command(s, {}, {})


def test_unbound_optional_input_outside_a_group_raises() -> None:
    s = spec("run --size ${{inputs.size}}", {"size": {"type": "integer", "optional": True}})
    with pytest.raises(UnboundInputError, match=r"\$\[\["):
        render_command(s, {}, {})


def test_unbound_output_raises() -> None:
    s = spec("run --out ${{outputs.model}}", {}, {"model": {"type": "uri_folder"}})
    with pytest.raises(UnboundOutputError, match="'model'"):
        render_command(s, {}, {})


def test_undeclared_references_and_unknown_names_raise() -> None:
    with pytest.raises(ComponentSpecError, match="inputs.nope"):
        render_command(spec("run ${{inputs.nope}}"), {}, {})
    with pytest.raises(ComponentSpecError, match="typo"):
        render_command(spec("run", {"n": {"type": "integer"}}), {"typo": 1}, {})
    with pytest.raises(ComponentSpecError, match="typo"):
        render_command(spec("run"), {}, {"typo": "/o"})


def test_load_component_spec_rejects_non_components(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ComponentSpecError):
        load_component_spec(path)
    path.write_text("name: x\n", encoding="utf-8")
    with pytest.raises(ComponentSpecError, match="command"):
        load_component_spec(path)


# --- the real component.yaml --------------------------------------------------------------------------


def test_component_yaml_with_defaults() -> None:
    command = render_command(load_component_spec(COMPONENT_YAML), REQUIRED_DATA, {"trained_model": "/mnt/out"})
    for fragment in (
        "--epochs 5",
        "--batch-size 16",
        "--learning-rate 0.001",
        "--random-seed 1",
        "--patience 3",
        "--untrained-model /mnt/model",
        "--trained-model /mnt/out",
    ):
        assert fragment in command
    assert "--image-size" not in command
    assert "--num-workers" not in command
    assert "$[[" not in command and "${{" not in command
    assert command.startswith("python -m train_pytorch_model.train ")


def test_component_yaml_with_everything_set() -> None:
    inputs = {**REQUIRED_DATA, "epochs": 2, "batch_size": 4, "learning_rate": 0.01, "random_seed": 7}
    inputs |= {"patience": 1, "image_size": 224, "num_workers": 0}
    args = shlex.split(render_command(load_component_spec(COMPONENT_YAML), inputs, {"trained_model": "/o"}))
    assert args[args.index("--image-size") + 1] == "224"
    assert args[args.index("--num-workers") + 1] == "0"
    assert args[args.index("--epochs") + 1] == "2"
    assert args[args.index("--learning-rate") + 1] == "0.01"


def test_component_yaml_needs_the_data_inputs() -> None:
    with pytest.raises(UnboundInputError, match="'untrained_model'"):
        render_command(load_component_spec(COMPONENT_YAML), {}, {"trained_model": "/o"})


# --- running ------------------------------------------------------------------------------------------

PROBE = """\
import json, os, sys
json.dump({
    "argv": sys.argv[1:], "cwd": os.getcwd(), "executable": sys.executable,
    "pythonpath": os.environ.get("PYTHONPATH", ""), "extra": os.environ.get("EXTRA"),
}, open(sys.argv[sys.argv.index("--out") + 1] + "/probe.json", "w"))
"""


def make_probe_component(tmp_path: Path) -> Path:
    """A component whose command only records how it was run: no training involved."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "probe.py").write_text(PROBE, encoding="utf-8")
    component = tmp_path / "component.yaml"
    component.write_text(
        textwrap.dedent(
            """\
            type: command
            name: probe
            code: ./code
            inputs:
              data: {type: uri_folder}
              n: {type: integer, default: 3}
              size: {type: integer, optional: true}
            outputs:
              out: {type: uri_folder}
            command: >-
              python -m probe --data ${{inputs.data}} --n ${{inputs.n}}
              $[[--size ${{inputs.size}}]] --out ${{outputs.out}}
            """
        ),
        encoding="utf-8",
    )
    return component


def test_run_component(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    component = make_probe_component(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my data").mkdir()
    result = run_component(component, {"data": "my data"}, {"out": "results/out dir"}, env={"EXTRA": "yes"})
    assert result.returncode == 0
    out = tmp_path / "results" / "out dir"
    probe = json.loads((out / "probe.json").read_text(encoding="utf-8"))
    assert probe["argv"] == ["--data", str(tmp_path / "my data"), "--n", "3", "--out", str(out)]
    assert Path(probe["cwd"]) == (tmp_path / "code").resolve()
    assert probe["pythonpath"].split(":")[0] == str((tmp_path / "code").resolve())
    assert Path(probe["executable"]) == Path(sys.executable)
    assert probe["extra"] == "yes"


def test_run_component_failure(tmp_path: Path) -> None:
    component = tmp_path / "component.yaml"
    component.write_text("type: command\ncommand: exit 3\n", encoding="utf-8")
    assert run_component(component, {}, {}, check=False).returncode == 3
    with pytest.raises(subprocess.CalledProcessError):
        run_component(component, {}, {})


def test_cli_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(COMPONENT_YAML), "--output", "trained_model=/o", "--input", "image_size=128", "--dry-run"]
    argv += [f"--input={name}={value}" for name, value in REQUIRED_DATA.items()]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip()
    assert "--image-size 128" in printed
    assert "--epochs 5" in printed
    assert printed.endswith("--trained-model /o")


def test_cli_reports_unbound_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(COMPONENT_YAML), "--output", "trained_model=/o", "--dry-run"]) == 2
    assert "untrained_model" in capsys.readouterr().err


def test_cli_as_a_module(tmp_path: Path) -> None:
    component = make_probe_component(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "train_pytorch_model.local.command_line", str(component), "--input", "data=/d"]
        + ["--input", "size=9", "--output", f"out={out}"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert "--size 9" in result.stdout
    assert (out / "probe.json").is_file()
