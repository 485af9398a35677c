"""The local runner (train_pytorch_model.local.local_runner) on small made-up pipelines: dependency order,
overrides, dry runs, and every binding error named before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from train_pytorch_model.local.local_runner import PipelineError, apply_overrides, main, plan_pipeline

# --- the local runner on small synthetic components -------------------------------------------------------


def _component(folder: Path, name: str, command: str, inputs: dict | None = None, outputs: dict | None = None) -> Path:
    path = folder / f"{name}.yaml"
    spec = {"type": "command", "name": name, "code": ".", "command": command}
    spec["inputs"] = inputs or {}
    spec["outputs"] = outputs or {}
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _pipeline(folder: Path, jobs: dict, inputs: dict | None = None, outputs: dict | None = None) -> Path:
    path = folder / "pipeline.yaml"
    document = {"type": "pipeline", "inputs": inputs or {}, "outputs": outputs or {}, "jobs": jobs}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """write -> append -> count, declared in the YAML in reverse order so that YAML order would be wrong."""
    components = tmp_path / "components"
    components.mkdir()
    folder = {"type": "uri_folder"}
    _component(
        components,
        "write",
        "echo ${{inputs.greeting}} > ${{outputs.out}}/msg.txt",
        {"greeting": {"type": "string", "default": "hello"}},
        {"out": folder},
    )
    _component(
        components,
        "append",
        "cp ${{inputs.src}}/msg.txt ${{outputs.out}}/msg.txt && echo ${{inputs.word}} ${{inputs.times}} "
        ">> ${{outputs.out}}/msg.txt",
        {"src": folder, "word": {"type": "string"}, "times": {"type": "integer", "default": 1}},
        {"out": folder},
    )
    _component(
        components,
        "count",
        "wc -l < ${{inputs.src}}/msg.txt > ${{outputs.lines}}/count.txt && ls ${{inputs.extra}} > "
        "${{outputs.lines}}/extra.txt",
        {"src": folder, "extra": folder},
        {"lines": folder},
    )
    return _pipeline(
        tmp_path,
        {
            "count": {
                "type": "command",
                "component": "components/count.yaml",
                "compute": "azureml:gpu-cluster",
                "inputs": {
                    "src": {"type": "uri_folder", "path": "${{parent.jobs.append.outputs.out}}"},
                    "extra": "${{parent.inputs.extra}}",
                },
                "outputs": {"lines": "${{parent.outputs.line_count}}"},
            },
            "append": {
                "component": "components/append.yaml",
                "inputs": {"src": "${{parent.jobs.write.outputs.out}}", "word": "${{parent.inputs.word}}", "times": 2},
            },
            "write": {"type": "command", "component": "components/write.yaml"},
        },
        inputs={"word": "world", "extra": {"type": "uri_folder", "path": "extra"}},
        outputs={"line_count": {"type": "uri_folder"}},
    )


def test_runs_steps_in_dependency_order_with_parent_bindings(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "marker").touch()
    work = tmp_path / "work"
    final = tmp_path / "final"
    code = main([str(chain), "--input", "word=there", "--output", f"line_count={final}", "--workdir", str(work)])
    out = capsys.readouterr().out
    assert code == 0
    assert "init_model" not in out
    assert "steps in order: write -> append -> count" in out
    assert (work / "write" / "out" / "msg.txt").read_text() == "hello\n"
    assert (work / "append" / "out" / "msg.txt").read_text() == "hello\nthere 2\n"
    assert (final / "count.txt").read_text().strip() == "2"
    assert (final / "extra.txt").read_text().strip() == "marker"  # a YAML path, relative to the YAML
    assert not (work / "count").exists()  # its only output went to the pipeline output's folder
    assert "ignoring compute locally" in out
    assert "count.lines = pipeline output line_count" in out  # the summary


def test_set_overrides_like_az_ml_job_create(chain: Path, tmp_path: Path) -> None:
    steps = plan_pipeline(
        chain,
        overrides={"jobs.append.inputs.times": "5", "jobs.write.inputs.greeting": "hi"},
        workdir=tmp_path / "w",
    )
    by_name = {step.name: step for step in steps}
    assert by_name["append"].inputs["times"] == 5
    assert "echo hi >" in by_name["write"].command
    assert "echo world 5 >>" in by_name["append"].command


def test_apply_overrides_creates_and_refuses() -> None:
    document: dict[str, Any] = {"inputs": {"epochs": 5}}
    apply_overrides(document, {"inputs.flag": "false", "settings.default_compute": "azureml:x"})
    assert document["inputs"]["flag"] is False
    assert document["settings"] == {"default_compute": "azureml:x"}
    with pytest.raises(PipelineError, match="inputs.epochs is not a mapping"):
        apply_overrides(document, {"inputs.epochs.value": "3"})


def test_dry_run_prints_commands_and_runs_nothing(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    assert main([str(chain), "--workdir", str(work), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"echo hello > {work}/write/out/msg.txt" in out
    assert "count (ignored locally: compute)" in out
    assert not work.exists()


def _run_expecting_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "error:" in captured.err
    return captured.err


def test_unbound_required_input_fails_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _component(tmp_path, "first", "touch ${{outputs.out}}/ran", outputs={"out": {"type": "uri_folder"}})
    _component(
        tmp_path,
        "needs",
        "cat ${{inputs.path}}",
        {"path": {"type": "uri_folder"}, "data": {"type": "uri_folder"}},
    )
    pipeline = _pipeline(
        tmp_path,
        {
            "first": {"component": "first.yaml"},
            "second": {"component": "needs.yaml", "inputs": {"path": "${{parent.jobs.first.outputs.out}}"}},
        },
    )
    work = tmp_path / "work"
    err = _run_expecting_error([str(pipeline), "--workdir", str(work)], capsys)
    assert "step 'second', input 'data'" in err  # required though the command does not use it
    assert not work.exists()


def test_bad_values_fail_before_anything_runs(chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    (tmp_path / "extra").mkdir()
    err = _run_expecting_error([str(chain), "--workdir", str(work), "--set", "jobs.append.inputs.times=abc"], capsys)
    assert "step 'append': input 'times' is 'abc', not an integer" in err
    err = _run_expecting_error([str(chain), "--workdir", str(work), "--input", "extra="], capsys)
    assert "--input extra= has no value" in err  # an unset variable must not bind the current folder
    assert not work.exists()


def test_job_level_data_paths_are_relative_to_the_yaml(chain: Path, tmp_path: Path) -> None:
    (tmp_path / "data" / "elsewhere").mkdir(parents=True)
    document = yaml.safe_load(chain.read_text(encoding="utf-8"))
    document["jobs"]["count"]["inputs"]["extra"] = {"type": "uri_folder", "path": "data/elsewhere"}
    nested = tmp_path / "sub" / "deeper"
    nested.mkdir(parents=True)
    moved = nested / "pipeline.yaml"
    for job in document["jobs"].values():
        job["component"] = "../../" + job["component"]
    document["jobs"]["count"]["inputs"]["extra"]["path"] = "../../data/elsewhere"
    moved.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    steps = plan_pipeline(moved, workdir=tmp_path / "work")
    count = next(step for step in steps if step.name == "count")
    assert Path(count.inputs["extra"]).resolve() == (tmp_path / "data" / "elsewhere").resolve()


def test_unbound_parent_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _component(tmp_path, "echo", "echo ${{inputs.n}}", {"n": {"type": "integer"}})
    pipeline = _pipeline(tmp_path, {"say": {"component": "echo.yaml", "inputs": {"n": "${{parent.inputs.count}}"}}})
    err = _run_expecting_error([str(pipeline), "--workdir", str(tmp_path / "w")], capsys)
    assert "step 'say', input 'n'" in err
    assert "no input 'count'" in err

    # Declared at pipeline level but given no value: unbound too.
    pipeline = _pipeline(
        tmp_path,
        {"say": {"component": "echo.yaml", "inputs": {"n": "${{parent.inputs.count}}"}}},
        inputs={"count": {"type": "integer"}},
    )
    err = _run_expecting_error([str(pipeline), "--workdir", str(tmp_path / "w")], capsys)
    assert "step 'say', input 'n'" in err
    assert main([str(pipeline), "--workdir", str(tmp_path / "w"), "--input", "count=3", "--dry-run"]) == 0


def test_cycle_fails_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = {"type": "uri_folder"}
    _component(tmp_path, "pass", "touch ${{outputs.out}}/ran", {"src": folder}, {"out": folder})
    _component(tmp_path, "free", "touch ${{outputs.out}}/ran", outputs={"out": folder})
    pipeline = _pipeline(
        tmp_path,
        {
            "independent": {"component": "free.yaml"},
            "a": {"component": "pass.yaml", "inputs": {"src": "${{parent.jobs.b.outputs.out}}"}},
            "b": {"component": "pass.yaml", "inputs": {"src": "${{parent.jobs.a.outputs.out}}"}},
        },
    )
    work = tmp_path / "work"
    err = _run_expecting_error([str(pipeline), "--workdir", str(work)], capsys)
    assert "cycle" in err
    assert "'a'" in err and "'b'" in err
    assert not work.exists()


def test_reference_errors_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = {"type": "uri_folder"}
    _component(tmp_path, "pass", "touch ${{outputs.out}}/ran", {"src": folder}, {"out": folder})
    pipeline = _pipeline(
        tmp_path, {"a": {"component": "pass.yaml", "inputs": {"src": "${{parent.jobs.zz.outputs.out}}"}}}
    )
    assert "there is no step 'zz'" in _run_expecting_error([str(pipeline)], capsys)
    pipeline = _pipeline(
        tmp_path,
        {
            "a": {"component": "pass.yaml", "inputs": {"src": "x"}},
            "b": {"component": "pass.yaml", "inputs": {"src": "${{parent.jobs.a.outputs.nope}}"}},
        },
    )
    assert "step 'a' has no output 'nope'" in _run_expecting_error([str(pipeline)], capsys)
    pipeline = _pipeline(tmp_path, {"a": {"component": "azureml:pass@latest"}})
    assert "use a file path" in _run_expecting_error([str(pipeline)], capsys)
    pipeline = _pipeline(
        tmp_path,
        {"a": {"component": "pass.yaml", "inputs": {"src": "${{parent.inputs.data}}"}}},
        inputs={"data": {"type": "uri_folder", "path": "azureml://datastores/workspaceblobstore/paths/x/"}},
    )
    assert "--input data=PATH" in _run_expecting_error([str(pipeline)], capsys)


def test_a_failing_step_stops_the_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = {"type": "uri_folder"}
    _component(tmp_path, "fail", "exit 3", outputs={"out": folder})
    _component(tmp_path, "after", "touch ${{outputs.out}}/ran", {"src": folder}, {"out": folder})
    pipeline = _pipeline(
        tmp_path,
        {
            "bad": {"component": "fail.yaml"},
            "later": {"component": "after.yaml", "inputs": {"src": "${{parent.jobs.bad.outputs.out}}"}},
        },
    )
    assert main([str(pipeline), "--workdir", str(tmp_path / "w")]) == 3
    assert "step 'bad' failed with exit code 3" in capsys.readouterr().err
    assert not (tmp_path / "w" / "later").exists()


def test_runs_a_single_component_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _component(
        tmp_path,
        "hello",
        "echo ${{inputs.word}} > ${{outputs.out}}/said.txt",
        {"word": {"type": "string"}},
        {"out": {"type": "uri_folder"}},
    )
    assert main([str(path), "--input", "word=hi", "--workdir", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "hello" / "out" / "said.txt").read_text() == "hi\n"
    out_dir = tmp_path / "elsewhere"
    assert main([str(path), "--input", "word=yo", "--output", f"out={out_dir}", "--workdir", str(tmp_path / "w")]) == 0
    assert (out_dir / "said.txt").read_text() == "yo\n"
    capsys.readouterr()
