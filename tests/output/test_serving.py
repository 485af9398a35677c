"""The trained output as a deployable MLflow model: its signature and input example, and the real MLflow scoring
server (`mlflow models serve`, on 127.0.0.1) answering every payload form it knows with the pyfunc model's
probabilities."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model
from mlflow.types import DataType

from train_pytorch_model.train import main as train_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits, untrained_resnet18) -> Path:
    output = tmp_path_factory.mktemp("serving") / "trained_model"
    store = tmp_path_factory.mktemp("store") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        inputs = ["--untrained-model", str(untrained_resnet18), "--training-dataset", str(digits[0])]
        inputs += ["--validation-dataset", str(digits[1]), "--trained-model", str(output)]
        assert train_main([*inputs, "--epochs", "1"]) == 0
    return output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained):
    """`mlflow models serve` on the output, in this environment (as a deployment's image would run it)."""
    port = free_port()
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(trained), "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    try:
        assert process.poll() is None, process.communicate()[0][-3000:]
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.communicate(timeout=30)


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_the_model_states_its_signature_and_an_example(trained):
    model = Model.load(str(trained / "MLmodel"))
    assert model.signature.inputs.input_types() == [DataType.string]
    classes = ["0", "1", "7"]
    assert model.signature.outputs.input_names() == [f"Scored Probabilities_{c}" for c in classes] + ["Scored Labels"]
    example = json.loads((trained / "serving_input_example.json").read_text())
    frame = mlflow.pyfunc.load_model(str(trained)).predict(pd.DataFrame(**example["dataframe_split"]))
    assert list(frame.columns) == model.signature.outputs.input_names() and len(frame) == 1


def test_the_scoring_server_answers_every_payload_form(trained, server, digits):
    files = sorted(digits[1].rglob("*.png"))[::12][:3]
    images = [base64.b64encode(path.read_bytes()).decode("ascii") for path in files]
    expected = mlflow.pyfunc.load_model(str(trained)).predict([str(path) for path in files])
    payloads = {
        "dataframe_split": {"dataframe_split": {"columns": ["image"], "data": [[image] for image in images]}},
        "dataframe_records": {"dataframe_records": [{"image": image} for image in images]},
        "instances": {"instances": images},
        "instances of records": {"instances": [{"image": image} for image in images]},
        "inputs": {"inputs": images},
    }
    for form, payload in payloads.items():
        status, answer = post(server, payload)
        assert status == 200, (form, answer)
        got = pd.DataFrame(answer["predictions"])
        assert list(got["Scored Labels"]) == list(expected["Scored Labels"]), form
        columns = [c for c in expected.columns if c.startswith("Scored Probabilities")]
        np.testing.assert_allclose(got[columns].to_numpy(), expected[columns].to_numpy(), atol=1e-5, err_msg=form)


def test_pixel_arrays_go_past_the_signature_through_the_raw_model(trained, digits):
    from PIL import Image

    path = sorted(digits[1].rglob("*.png"))[0]
    scorer = mlflow.pyfunc.load_model(str(trained))
    pixels = np.asarray(Image.open(path).convert("RGB"))
    by_pixels = scorer.get_raw_model().predict(pixels).filter(like="Scored Probabilities")
    by_path = scorer.predict([str(path)]).filter(like="Scored Probabilities")
    np.testing.assert_allclose(by_pixels.to_numpy(), by_path.to_numpy(), atol=1e-6)
