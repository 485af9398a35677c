"""Hostile and broken inputs through the component's entry: each gets its named error and exit code, one line on
stderr, no traceback, inputs untouched and no output that looks valid.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
import time
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import PIL.Image
import pytest
import torch
import torchvision
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, fill_disk, run_companion, tree_digest, write_digits_subset
from train_pytorch_model.formats.dataframe_directory import DATA_FILE
from train_pytorch_model.formats.model_directory import read_model_directory
from train_pytorch_model.local.command_line import run_component
from train_pytorch_model.model.networks import DesignerNet
from train_pytorch_model.train import main

ModelMaker = Callable[[Path, Path], Path]


class Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/train_pytorch_model_pwned"),))


def copy_model(untrained: Path, tmp: Path) -> Path:
    target = tmp / "model"
    shutil.copytree(untrained, target)
    return target


def model_without_spec(untrained: Path, tmp: Path) -> Path:
    model = copy_model(untrained, tmp)
    (model / "model_spec.yaml").unlink()
    return model


def model_naming_os_system(untrained: Path, tmp: Path) -> Path:
    model = copy_model(untrained, tmp)
    spec = yaml.safe_load((model / "model_spec.yaml").read_text())
    spec["flavor_extras"]["module"], spec["flavor_extras"]["class"] = "os", "system"
    (model / "model_spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return model


def model_with_densenet_weights(untrained: Path, tmp: Path) -> Path:
    model = copy_model(untrained, tmp)
    torch.save(DesignerNet(torchvision.models.densenet121()).state_dict(), model / "model")
    return model


def model_with_resnet34_weights(untrained: Path, tmp: Path) -> Path:
    # resnet34's first blocks fit a resnet18 by name and shape; the extra blocks must not be dropped silently.
    model = copy_model(untrained, tmp)
    torch.save(DesignerNet(torchvision.models.resnet34()).state_dict(), model / "model")
    return model


def _edit_spec(untrained: Path, tmp: Path, edit: Callable[[dict], None]) -> Path:
    model = copy_model(untrained, tmp)
    spec = yaml.safe_load((model / "model_spec.yaml").read_text())
    edit(spec)
    (model / "model_spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return model


def model_with_text_flavor_extras(untrained: Path, tmp: Path) -> Path:
    return _edit_spec(untrained, tmp, lambda spec: spec.update(flavor_extras="resnet"))


def model_with_list_as_module(untrained: Path, tmp: Path) -> Path:
    return _edit_spec(untrained, tmp, lambda spec: spec["flavor_extras"].update(module=["a", "b"]))


def model_with_text_pretrained(untrained: Path, tmp: Path) -> Path:
    return _edit_spec(untrained, tmp, lambda spec: spec["flavor_extras"]["init_params"].update(pretrained="false"))


def model_with_boolean_num_classes(untrained: Path, tmp: Path) -> Path:
    return _edit_spec(untrained, tmp, lambda spec: spec["flavor_extras"]["init_params"].update(num_classes=True))


def model_with_bad_normalization(untrained: Path, tmp: Path) -> Path:
    inputs = [{"name": "image", "pre_processor": {"init_params": {"mean": "abc", "std": [1, 1, 1]}}}]
    return _edit_spec(untrained, tmp, lambda spec: spec.update(inputs=inputs))


def model_with_pickled_object(untrained: Path, tmp: Path) -> Path:
    model = copy_model(untrained, tmp)
    torch.save({"model.conv1.weight": Evil()}, model / "model")
    return model


def model_with_truncated_weights(untrained: Path, tmp: Path) -> Path:
    model = copy_model(untrained, tmp)
    data = (model / "model").read_bytes()
    (model / "model").write_bytes(data[: len(data) // 3])
    return model


def model_missing(untrained: Path, tmp: Path) -> Path:
    return tmp / "no_such_model"


def flat_folder(tmp: Path, train: Path) -> Path:
    folder = tmp / "flat"
    folder.mkdir()
    for image in sorted(train.rglob("*.png"))[:6]:
        shutil.copy(image, folder / image.name)
    return folder


def single_class(tmp: Path, train: Path) -> Path:
    return write_digits_subset(tmp / "single", classes=(3,), per_class=10)


def empty_folder(tmp: Path, train: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def no_images(tmp: Path, train: Path) -> Path:
    folder = tmp / "text"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "notes.txt").write_text("not an image")
    return folder


def all_corrupt(tmp: Path, train: Path) -> Path:
    folder = tmp / "corrupt"
    for label in ("0", "1", "7"):
        (folder / label).mkdir(parents=True)
        for index in range(4):
            (folder / label / f"{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * index)
    return folder


def coco_detection(tmp: Path, train: Path) -> Path:
    folder = tmp / "coco"
    folder.mkdir()
    shutil.copy(next(train.rglob("*.png")), folder / "1.png")
    coco = {
        "images": [{"id": 1, "file_name": "1.png", "width": 8, "height": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def zip_slip(tmp: Path, train: Path) -> Path:
    folder = tmp / "zipslip"
    folder.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for image in sorted(train.rglob("*.png"))[:4]:
            bundle.write(image, f"data/{image.parent.name}/{image.name}")
        bundle.writestr("../../escaped.png", b"x")
    (folder / "data.zip").write_bytes(buffer.getvalue())
    return folder


def tar_with_link(tmp: Path, train: Path) -> Path:
    folder = tmp / "tarlink"
    folder.mkdir()
    with tarfile.open(folder / "data.tar.gz", "w:gz") as bundle:
        for image in sorted(train.rglob("*.png"))[:4]:
            bundle.add(image, f"{image.parent.name}/{image.name}")
        link = tarfile.TarInfo("0/passwd.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        bundle.addfile(link)
    return folder


def _zip_of_classes(train: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for image in sorted(train.rglob("*.png"))[:6]:
            bundle.write(image, f"{image.parent.name}/{image.name}")
    return buffer.getvalue()


def encrypted_zip(tmp: Path, train: Path) -> Path:
    folder = tmp / "encrypted"
    folder.mkdir()
    data = bytearray(_zip_of_classes(train))
    # Set the 'encrypted' bit in every local and central header, as `zip -P` does (zipfile cannot write it).
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        while start >= 0:
            data[start + flag_offset] |= 0x1
            start = data.find(signature, start + 4)
    (folder / "data.zip").write_bytes(bytes(data))
    return folder


def _corrupt_tar(tmp: Path, train: Path, name: str, mode: str) -> Path:
    folder = tmp / "corrupt_tar"
    folder.mkdir()
    with tarfile.open(folder / name, mode) as bundle:
        for image in sorted(train.rglob("*.png")):
            bundle.add(image, f"{image.parent.name}/{image.name}")
    data = bytearray((folder / name).read_bytes())
    # The first members stay readable (so it looks like a tar); bytes in the middle of the stream are flipped.
    for index in range(len(data) * 2 // 5, len(data) * 3 // 5, 101):
        data[index] ^= 0xFF
    (folder / name).write_bytes(bytes(data))
    return folder


def corrupt_tar_gz(tmp: Path, train: Path) -> Path:
    return _corrupt_tar(tmp, train, "data.tar.gz", "w:gz")


def corrupt_tar_xz(tmp: Path, train: Path) -> Path:
    return _corrupt_tar(tmp, train, "data.tar.xz", "w:xz")


def image_directory_with_text_category_ids(tmp: Path, train: Path) -> Path:
    from conftest import DESIGNER

    folder = tmp / "image_directory"
    shutil.copytree(DESIGNER / "image_directory", folder)
    schema = json.loads((folder / "_schema.json").read_text())
    categories = [{"id": None, "name": "cat"}, {"id": "x", "name": "dog"}]
    schema["columnAttributes"][2]["properties"]["categories"] = categories
    (folder / "_schema.json").write_text(json.dumps(schema))
    return folder


def valid_with_unknown_class(tmp: Path, train: Path) -> Path:
    return write_digits_subset(tmp / "unknown", classes=(0, 5), per_class=4, offset=50)


MODEL_CASES = [
    (model_missing, "does not exist"),
    (model_without_spec, "model spec"),
    (model_naming_os_system, "not an allowed network"),
    (model_with_densenet_weights, "do not fit a resnet18"),
    (model_with_pickled_object, "cannot be loaded as a tensor state dict"),
    (model_with_truncated_weights, "cannot be loaded as a tensor state dict"),
    (model_with_resnet34_weights, "tensors that a resnet18 does not have"),
    (model_with_text_flavor_extras, "flavor_extras is 'resnet', not a mapping"),
    (model_with_list_as_module, "not an allowed network"),
    (model_with_text_pretrained, "init_params.pretrained is 'false', not true or false"),
    (model_with_boolean_num_classes, "num_classes is True, not a positive integer"),
    (model_with_bad_normalization, "input normalization"),
]


TRAINING_CASES = [
    (flat_folder, "NotLabeledDatasetError", 5, "not sorted into class folders"),
    (single_class, "InvalidDatasetError", 6, "at least two"),
    (empty_folder, "InvalidDatasetError", 6, "is empty"),
    (no_images, "InvalidDatasetError", 6, "no image files"),
    (all_corrupt, "InvalidDatasetError", 6, "could be decoded"),
    (coco_detection, "InvalidDatasetError", 6, "COCO"),
    (zip_slip, "InvalidDatasetError", 6, "outside the extraction folder"),
    (tar_with_link, "InvalidDatasetError", 6, "link"),
    (encrypted_zip, "InvalidDatasetError", 6, "password"),
    (corrupt_tar_gz, "InvalidDatasetError", 6, "could not be extracted"),
    (corrupt_tar_xz, "InvalidDatasetError", 6, "could not be extracted"),
    (image_directory_with_text_category_ids, "InvalidDatasetError", 6, "category ids must be integers"),
]


def run_main(capsys, model: Path, train: Path, valid: Path, output: Path, *extra: str) -> tuple[int, str]:
    code = main(
        [
            "--untrained-model", str(model),
            "--training-dataset", str(train),
            "--validation-dataset", str(valid),
            "--trained-model", str(output),
            "--epochs", "1", "--batch-size", "4",
            *extra,
        ]
    )  # fmt: skip
    return code, capsys.readouterr().err


def check_clean_failure(err: str, output: Path, inputs: dict[Path, dict[str, str]]) -> None:
    assert "Traceback" not in err
    assert not (output / "_meta.yaml").exists(), "a failed job must not leave a valid-looking output"
    for root, before in inputs.items():
        if root.exists():
            assert tree_digest(root) == before, f"{root} was modified"
    assert not Path("/tmp/train_pytorch_model_pwned").exists(), "code inside an input was executed"


@pytest.fixture(autouse=True)
def _local_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.parametrize(("make_model", "phrase"), MODEL_CASES, ids=[c[0].__name__ for c in MODEL_CASES])
def test_bad_untrained_model(tmp_path, capsys, digits, untrained_resnet18, make_model, phrase):
    train, valid = digits
    model = make_model(untrained_resnet18, tmp_path)
    inputs = {root: tree_digest(root) for root in (model, train, valid) if root.exists()}
    code, err = run_main(capsys, model, train, valid, tmp_path / "out")
    assert code == 4, err
    assert err.startswith("InvalidModelDirectoryError") and phrase in err, err
    check_clean_failure(err, tmp_path / "out", inputs)


@pytest.mark.parametrize(
    ("make_data", "name", "code", "phrase"), TRAINING_CASES, ids=[c[0].__name__ for c in TRAINING_CASES]
)
def test_bad_training_dataset(tmp_path, capsys, digits, untrained_resnet18, make_data, name, code, phrase):
    train, valid = digits
    bad = make_data(tmp_path, train)
    inputs = {root: tree_digest(root) for root in (bad, train, valid, untrained_resnet18)}
    exit_code, err = run_main(capsys, untrained_resnet18, bad, valid, tmp_path / "out")
    assert exit_code == code, err
    assert err.startswith(name) and "Training dataset" in err and phrase in err, err
    check_clean_failure(err, tmp_path / "out", inputs)
    assert not (tmp_path.parent / "escaped.png").exists()


def test_validation_class_missing_from_training(tmp_path, capsys, digits, untrained_resnet18):
    train, _ = digits
    valid = valid_with_unknown_class(tmp_path, train)
    inputs = {root: tree_digest(root) for root in (train, valid)}
    code, err = run_main(capsys, untrained_resnet18, train, valid, tmp_path / "out")
    assert code == 6 and err.startswith("InvalidDatasetError") and "Validation dataset" in err and "'5'" in err
    check_clean_failure(err, tmp_path / "out", inputs)


def test_some_bad_images_are_skipped_and_named(tmp_path, capsys, untrained_resnet18):
    train = write_digits_subset(tmp_path / "train", classes=(0, 1), per_class=20)
    (train / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    (train / "1" / "empty.jpg").write_bytes(b"")
    valid = write_digits_subset(tmp_path / "valid", classes=(0, 1), per_class=6, offset=30)
    inputs = {root: tree_digest(root) for root in (train, valid)}
    code, err = run_main(capsys, untrained_resnet18, train, valid, tmp_path / "out")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["last_epoch"] == 1
    client = MlflowClient(summary["mlflow_tracking_uri"])
    local = client.download_artifacts(summary["mlflow_run_id"], "dataset_summary.json", str(tmp_path))
    skipped = {item["file"]: item["reason"] for item in json.loads(Path(local).read_text())["training"]["skipped"]}
    assert set(skipped) == {"0/broken.png", "1/empty.jpg"}
    assert all(reason for reason in skipped.values())
    for root, before in inputs.items():
        assert tree_digest(root) == before


def test_diverging_loss_stops_with_a_clear_error(tmp_path, capsys, digits, untrained_resnet18):
    train, valid = digits
    code, err = run_main(capsys, untrained_resnet18, train, valid, tmp_path / "out", "--learning-rate", "1e30")
    assert code == 7, err
    assert err.startswith("TrainingDivergedError") and "Lower the learning rate" in err
    assert "Traceback" not in err


@pytest.fixture
def second_epoch_diverges(monkeypatch):
    """Fault injection: the second epoch's training loss comes back NaN."""
    from train_pytorch_model.training import fit as trainer

    real = trainer.train_one_epoch
    calls = []

    def second_epoch_diverges(*args, **kwargs):
        stats = real(*args, **kwargs)
        calls.append(stats)
        if len(calls) == 2:
            stats.loss = float("nan")
        return stats

    monkeypatch.setattr(trainer, "train_one_epoch", second_epoch_diverges)


def test_loss_turning_nan_keeps_the_best_model_so_far(
    tmp_path, capsys, digits, untrained_resnet18, second_epoch_diverges
):
    train, valid = digits
    code, err = run_main(capsys, untrained_resnet18, train, valid, tmp_path / "out", "--epochs", "3")
    assert code == 7, err
    assert "NaN or infinite at epoch 2" in err and "model of epoch 1" in err
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["best_epoch"] == 1 and "diverged" in summary["stop_reason"]
    assert (tmp_path / "out" / "_meta.yaml").is_file()


def test_out_of_memory_suggests_a_smaller_batch(tmp_path, capsys, digits, untrained_resnet18, monkeypatch):
    """Fault injection: the device runs out of memory in the first step."""
    from train_pytorch_model.training import fit as trainer

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "train_one_epoch", out_of_memory)
    train, valid = digits
    code, err = run_main(capsys, untrained_resnet18, train, valid, tmp_path / "out")
    assert code == 8, err
    assert err.startswith("ModuleOutOfMemoryError") and "Lower batch_size" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "_meta.yaml").exists()


# ----------------------------------------------------------------------------------------------------------------
# the output folder: nothing of the user's is deleted, nothing stale looks valid, nothing planted runs


def test_output_inside_an_input_is_refused(tmp_path, capsys, digits, untrained_resnet18):
    train, valid = digits
    work = tmp_path / "work"
    shutil.copytree(train, work / "train")
    inputs = {work: tree_digest(work)}
    code, err = run_main(capsys, untrained_resnet18, work / "train", valid, work)
    assert code == 3 and err.startswith("InvalidParameterError") and "overlaps the input training_dataset" in err
    check_clean_failure(err, work, inputs)


def test_output_folder_holding_other_files_is_refused(tmp_path, capsys, digits, untrained_resnet18):
    train, valid = digits
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("my notes")
    code, err = run_main(capsys, untrained_resnet18, train, valid, output)
    assert code == 3 and "already holds files (notes.txt)" in err, err
    assert (output / "notes.txt").read_text() == "my notes"


def test_init_model_refuses_a_folder_holding_other_files(tmp_path, capsys):
    from train_pytorch_model.init_model import main as init_main

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    code = init_main(["--model-name", "resnet18", "--pretrained", "false", "--untrained-model", str(folder)])
    err = capsys.readouterr().err
    assert code == 3 and "already holds files" in err and (folder / "keep.txt").exists()


def test_failed_rerun_does_not_leave_the_earlier_model_looking_valid(tmp_path, capsys, digits, untrained_resnet18):
    train, valid = digits
    output = tmp_path / "out"
    code, err = run_main(capsys, untrained_resnet18, train, valid, output)
    assert code == 0 and (output / "_meta.yaml").is_file(), err
    code, err = run_main(capsys, untrained_resnet18, train, valid, output, "--learning-rate", "1e30")
    assert code == 7, err
    assert not (output / "_meta.yaml").exists(), "the earlier model must not pass for this run's result"
    code, err = run_main(capsys, untrained_resnet18, train, valid, output, "--batch-size", "1000")
    assert code == 3, err  # fails before training, with the earlier model's files still there
    code, err = run_main(capsys, untrained_resnet18, train, valid, output)
    assert code == 0, "a failed run must not lock its output folder: " + err
    assert (output / "_meta.yaml").is_file() and not (output / ".replacing").exists()


def test_diverged_run_keeps_a_clean_model_and_strict_json(
    tmp_path, capsys, digits, untrained_resnet18, second_epoch_diverges
):
    train, valid = digits
    output = tmp_path / "out"
    code, err = run_main(capsys, untrained_resnet18, train, valid, output, "--epochs", "3")
    assert code == 7, err
    assert (output / "_meta.yaml").is_file() and not (output / ".checkpoint").exists()
    text = (output / "training_summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in the summary"))
    assert summary["history"][-1]["train_loss"] is None


def test_planted_checkpoint_pickle_is_not_run(tmp_path, capsys, digits, untrained_resnet18):
    train, valid = digits
    output = tmp_path / "out"
    (output / ".checkpoint").mkdir(parents=True)
    torch.save({"fingerprint": Evil()}, output / ".checkpoint" / "state.pt")
    code, err = run_main(capsys, untrained_resnet18, train, valid, output)
    assert code == 0, err
    assert not Path("/tmp/train_pytorch_model_pwned").exists(), "code planted in the checkpoint was executed"


def test_training_a_model_further_keeps_its_normalization(tmp_path, capsys, digits, untrained_resnet18):
    # A trained output records the statistics it was trained with (ImageNet ones after pretrained weights);
    # given back as the untrained model, it must be trained and saved with those, not the designer default.
    train, valid = digits
    statistics = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    inputs = [{"name": "image", "pre_processor": {"init_params": statistics}}]
    model = _edit_spec(untrained_resnet18, tmp_path, lambda spec: spec.update(inputs=inputs))
    code, err = run_main(capsys, model, train, valid, tmp_path / "out")
    assert code == 0, err
    recorded = json.loads((tmp_path / "out" / "preprocessing.json").read_text())
    assert recorded["mean"] == pytest.approx(statistics["mean"]) and recorded["std"] == pytest.approx(statistics["std"])


def test_convert_refuses_to_overwrite_a_designer_folder_of_another_kind(tmp_path, capsys, digits):
    from conftest import DESIGNER
    from train_pytorch_model.convert_to_image_directory import main as convert_main

    train, _ = digits
    target = tmp_path / "a_model"
    shutil.copytree(DESIGNER / "trained_model", target)
    before = tree_digest(target)
    code = convert_main(["--input-dataset", str(train), "--output-dataset", str(target)])
    assert code == 3 and "already holds files" in capsys.readouterr().err
    assert tree_digest(target) == before


def test_an_empty_folder_argument_is_refused_not_taken_as_the_current_folder(capsys, digits, untrained_resnet18):
    train, valid = digits
    with pytest.raises(SystemExit) as exit_info:
        main(["--untrained-model", str(untrained_resnet18), "--training-dataset", "", "--validation-dataset",
              str(valid), "--trained-model", "out"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "is empty (an unset variable?)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# faults real jobs meet: a full disk, phone photos, class names spelled two ways


def wait_for_checkpoint(output: Path, epoch: int, seconds: float = 60) -> None:
    """Until the background writer has put the checkpoint of epoch on disk."""
    state = output / ".checkpoint" / "state.pt"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        partial = state.with_name("state.pt.partial")
        if state.is_file() and not partial.exists():
            with contextlib.suppress(Exception):  # being replaced: look again
                if torch.load(state, weights_only=True)["epoch"] == epoch:
                    return
        time.sleep(0.05)
    raise AssertionError(f"the checkpoint of epoch {epoch} never landed")


def assert_disk_error(code: int, err: str, *phrases: str) -> None:
    lines = err.strip().splitlines()
    assert code == 10, err
    assert len(lines) == 1 and lines[0].startswith("InsufficientDiskSpaceError: Disk space: "), err
    assert all(phrase in err for phrase in phrases), err
    assert "Traceback" not in err


def test_an_output_disk_too_small_is_refused_before_training(tmp_path, digits, untrained_resnet18, small_disk):
    """Through component.yaml's own command line: the checkpoint and model sizes are known before the first
    epoch, so the job stops in seconds with what it needs and what is free."""
    train, valid = digits
    inputs = {path: tree_digest(path) for path in (train, valid, untrained_resnet18)}
    output = small_disk(100) / "trained_model"
    result = run_component(
        REPO_ROOT / "component.yaml",
        {"untrained_model": untrained_resnet18, "training_dataset": train, "validation_dataset": valid},
        {"trained_model": output},
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        check=False,
        capture_output=True,
    )
    assert_disk_error(result.returncode, result.stderr, "the checkpoint and the trained model needs about 28", "MB")
    assert "are free there" in result.stderr and str(output) in result.stderr
    assert "Epoch 1/" not in result.stdout
    check_clean_failure(result.stderr, output, inputs)


def test_a_disk_filling_up_while_checkpointing_keeps_the_last_checkpoint(
    tmp_path, capsys, digits, untrained_resnet18, small_disk, monkeypatch, checkpoint_every_epoch
):
    from train_pytorch_model.training import fit

    train, valid = digits
    inputs = {path: tree_digest(path) for path in (train, valid, untrained_resnet18)}
    disk = small_disk(400)
    output = disk / "trained_model"
    real_run_epoch = fit.run_epoch

    def fill_after_epoch_two(epoch, *args, **kwargs):
        metrics = real_run_epoch(epoch, *args, **kwargs)
        if epoch == 2:
            wait_for_checkpoint(output, 1)
            fill_disk(disk, leave_megabytes=20)  # the next checkpoint needs about 90 MB
        return metrics

    monkeypatch.setattr(fit, "run_epoch", fill_after_epoch_two)
    code, err = run_main(capsys, untrained_resnet18, train, valid, output, "--epochs", "3")
    assert_disk_error(code, err, "filled up while writing the checkpoint", "resumes")
    check_clean_failure(err, output, inputs)
    assert torch.load(output / ".checkpoint" / "state.pt", weights_only=True)["epoch"] == 1
    assert not (output / ".checkpoint" / "state.pt.partial").exists()

    (disk / "filler.bin").unlink()  # the user frees the disk and runs the same job again
    monkeypatch.setattr(fit, "run_epoch", real_run_epoch)
    code, err = run_main(capsys, untrained_resnet18, train, valid, output, "--epochs", "3")
    assert code == 0, err
    summary = json.loads((output / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["resumed_from_epoch"] == 1 and summary["last_epoch"] == 3


def test_a_disk_filling_up_while_writing_the_model_leaves_nothing_that_looks_valid(
    tmp_path, capsys, digits, untrained_resnet18, small_disk, monkeypatch, checkpoint_every_epoch
):
    from train_pytorch_model.training import finish

    train, valid = digits
    inputs = {path: tree_digest(path) for path in (train, valid, untrained_resnet18)}
    disk = small_disk(400)
    output = disk / "trained_model"
    real_write = finish.write_model_output

    def fill_then_write(*args, **kwargs):
        wait_for_checkpoint(output, 2)
        fill_disk(disk, leave_megabytes=10)  # the model and the MLflow model need about 90 MB
        return real_write(*args, **kwargs)

    monkeypatch.setattr(finish, "write_model_output", fill_then_write)
    code, err = run_main(capsys, untrained_resnet18, train, valid, output, "--epochs", "2")
    assert_disk_error(code, err, "filled up while writing the trained model")
    check_clean_failure(err, output, inputs)
    assert not (output / ".staging").exists()
    assert torch.load(output / ".checkpoint" / "state.pt", weights_only=True)["epoch"] == 2

    (disk / "filler.bin").unlink()
    monkeypatch.setattr(finish, "write_model_output", real_write)
    code, err = run_main(capsys, untrained_resnet18, train, valid, output, "--epochs", "2")
    assert code == 0, err
    assert json.loads((output / "training_summary.json").read_text(encoding="utf-8"))["resumed_from_epoch"] == 2


def test_a_full_disk_anywhere_else_is_the_same_clear_error(
    tmp_path, capsys, digits, untrained_resnet18, monkeypatch, checkpoint_every_epoch
):
    """Fault injection, on any machine: torch.save's own failure on a full disk (a RuntimeError, not an
    OSError) while checkpointing ends as the disk error, with the checkpoint before it kept."""
    from train_pytorch_model.training import checkpoint

    real_save = checkpoint.torch.save
    calls = []

    def full_on_the_second_checkpoint(obj, path, *args, **kwargs):
        if str(path).endswith(".partial"):  # a checkpoint's write, not the model's
            calls.append(path)
            if len(calls) == 2:
                Path(path).write_bytes(b"partial")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_on_the_second_checkpoint)
    train, valid = digits
    output = tmp_path / "out"
    code, err = run_main(capsys, untrained_resnet18, train, valid, output, "--epochs", "3")
    assert_disk_error(code, err, "filled up while writing the checkpoint")
    assert torch.load(output / ".checkpoint" / "state.pt", weights_only=True)["epoch"] == 1
    assert not (output / ".checkpoint" / "state.pt.partial").exists()
    assert not (output / "_meta.yaml").exists()


def phone_photo_dataset(root: Path, train: Path) -> Path:
    """The digits as a phone leaves them: class 0 as HEIC photos, class 1 as AVIF, class 7 as JPEG."""
    formats = {"0": ("HEIF", ".heic"), "1": ("AVIF", ".avif"), "7": ("JPEG", ".jpg")}
    for image in sorted(train.rglob("*.png")):
        kind, suffix = formats[image.parent.name]
        target = root / image.parent.name / (image.stem + suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.open(image).convert("RGB").resize((32, 32)).save(target, format=kind, quality=95)
    return root


def test_phone_photos_train_like_any_other_images(tmp_path, capsys, digits, untrained_resnet18):
    train, valid = digits
    photos = phone_photo_dataset(tmp_path / "photos", train)
    inputs = {photos: tree_digest(photos)}
    output = tmp_path / "out"
    code, err = run_main(capsys, untrained_resnet18, photos, valid, output)
    assert code == 0, err
    summary = json.loads((output / "dataset_summary.json").read_text(encoding="utf-8"))
    assert summary["training"]["images_per_class"] == {"0": 30, "1": 30, "7": 30}
    assert summary["training"]["skipped"] == []
    assert tree_digest(photos) == inputs[photos]


CAFE_NFC = unicodedata.normalize("NFC", "brique café")
CAFE_NFD = unicodedata.normalize("NFD", "brique café")


def mac_zip(folder: Path, train: Path, names: dict[str, str]) -> Path:
    """A zip as a Mac makes it: class folder names stored in NFD."""
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "photos.zip", "w") as bundle:
        for image in sorted(train.rglob("*.png")):
            bundle.write(image, f"{unicodedata.normalize('NFD', names[image.parent.name])}/{image.name}")
    return folder


def test_class_names_from_a_mac_zip_match_the_same_names_typed_elsewhere(tmp_path, capsys, digits, untrained_resnet18):
    """Training classes in NFD (a Mac's zip), validation classes in NFC (a Windows folder): one set of classes,
    recorded in NFC in the label map, and the same names again when a model scores or Convert lists the zip."""
    train, valid = digits
    names = {"0": "brique café", "1": "crème brûlée", "7": "pain"}
    training = mac_zip(tmp_path / "training", train, names)
    validation = tmp_path / "validation"
    for image in sorted(valid.rglob("*.png")):
        target = validation / unicodedata.normalize("NFC", names[image.parent.name]) / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, target)
    inputs = {path: tree_digest(path) for path in (training, validation)}
    output = tmp_path / "out"
    code, err = run_main(capsys, untrained_resnet18, training, validation, output)
    assert code == 0, err
    expected = [unicodedata.normalize("NFC", names[key]) for key in ("0", "1", "7")]
    assert read_model_directory(output, "Trained model").classes == expected
    assert expected[0] == CAFE_NFC != CAFE_NFD

    scored = run_companion(
        "score_image_model", {"trained_model": output, "dataset": training}, {"scored_dataset": tmp_path / "scored"}
    )
    assert scored.returncode == 0, scored.stderr
    frame = pd.read_parquet(tmp_path / "scored" / DATA_FILE)
    assert set(frame["Scored Labels"]) <= set(expected) and set(frame["category"]) == set(expected)
    converted = run_companion(
        "convert_to_image_directory", {"input_dataset": training}, {"output_dataset": tmp_path / "converted"}
    )
    assert converted.returncode == 0, converted.stderr
    schema = json.loads((tmp_path / "converted" / "_schema.json").read_text(encoding="utf-8"))
    categories = next(c for c in schema["columnAttributes"] if c["name"] == "category")["properties"]["categories"]
    assert [c["name"] for c in categories] == expected
    assert all(tree_digest(path) == before for path, before in inputs.items())
