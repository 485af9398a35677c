"""The DenseNet and ResNet modules: write an UntrainedModelDirectory for Train PyTorch Model.

    python -m train_pytorch_model.init_model --model-name resnet18 --pretrained false --untrained-model DIR

With --pretrained true the ImageNet weights come through torchvision's weights API (from the torch hub cache
when present) and are stored in the folder, so that training never needs the network.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from .cli import run_cli
from .errors import InvalidModelDirectoryError, InvalidParameterError
from .formats.model_directory import write_model_directory
from .model.families import ARCHITECTURES, family_of_architecture
from .model.networks import DesignerNet, build_network, build_pretrained_network
from .output.publish import check_output_folder, staged
from .settings import parse_bool, path_argument


def write_untrained_model(destination: Path, model_name: str, pretrained: bool, flag: bool) -> None:
    check_output_folder(destination, {}, subject="Output untrained_model", kind="ModelDirectory")
    try:
        family = family_of_architecture(model_name)
    except KeyError as exc:
        raise InvalidParameterError(
            f"'{model_name}' is not a supported network.",
            f"Choose one of {', '.join(ARCHITECTURES)}.",
            subject="Parameter model_name",
        ) from exc
    if pretrained:
        try:
            network = build_pretrained_network(model_name, flag)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            raise InvalidModelDirectoryError(
                f"the ImageNet weights of {model_name} could not be loaded ({exc}).",
                "Check the compute's network access, or place the torchvision weights file in "
                "$TORCH_HOME/hub/checkpoints, or set pretrained to false.",
                subject="Pretrained weights",
            ) from exc
    else:
        network = build_network(model_name, flag=flag)
    init_params = {"model_name": model_name, "pretrained": pretrained, family.flag: flag}
    with staged(destination, "the untrained model") as staging:
        write_model_directory(staging, DesignerNet(network).state_dict(), family, init_params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train_pytorch_model.init_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-name", required=True, help=", ".join(ARCHITECTURES))
    parser.add_argument("--pretrained", default="true")
    parser.add_argument("--memory-efficient", default=None, help="DenseNet only: gradient checkpointing")
    parser.add_argument("--zero-init-residual", default=None, help="ResNet only")
    parser.add_argument("--untrained-model", required=True, type=path_argument, help="output folder")

    def body() -> None:
        args = parser.parse_args(argv)
        flag_value = args.memory_efficient if args.memory_efficient is not None else args.zero_init_residual
        write_untrained_model(
            Path(args.untrained_model),
            args.model_name,
            parse_bool("pretrained", args.pretrained),
            parse_bool("memory_efficient/zero_init_residual", flag_value or "false"),
        )
        print(f"Untrained {args.model_name} written to {args.untrained_model}")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
