"""The ResNet, DenseNet and Init Image Model components: write an UntrainedModelDirectory for Train PyTorch Model.

    python -m train_pytorch_model.init_model --model-name efficientnet_b0 --pretrained true --untrained-model DIR
        [--zero-init-residual B] [--memory-efficient B] [--aux-logits B]

Any image classifier torchvision builds (model/families.py lists them). With --pretrained true its ImageNet
weights (the weights' DEFAULT) come through torchvision's weights API, from the torch hub cache when present, and
are stored in the folder, so that training never needs the network. A flag belongs to a family (ResNet:
zero_init_residual, DenseNet: memory_efficient, Inception v3 and GoogLeNet: aux_logits); given for another
family it is an error, left out it takes the family's default.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

from .cli import run_cli
from .errors import InvalidModelDirectoryError, InvalidParameterError
from .model.families import ARCHITECTURES, FAMILIES, Family, family_of_architecture
from .output.publish import check_output_folder, staged
from .settings import parse_bool, path_argument

# Every flag any family has, as the command line spells it.
ALL_FLAGS = tuple(dict.fromkeys(flag for family in FAMILIES.values() for flag in family.flags))


def write_untrained_model(
    destination: Path, model_name: str, pretrained: bool, flags: Mapping[str, bool] | None = None
) -> None:
    check_output_folder(destination, {}, subject="Output untrained_model", kind="ModelDirectory")
    family = _family(model_name)
    chosen = _check_flags(family, dict(flags or {}))
    # Imported here: a wrong name or flag is reported before torch loads.
    from .formats.model_directory import write_model_directory
    from .model.networks import DesignerNet, build_network, pretrained_weights_name, recorded_options

    init_params: dict = {"model_name": model_name, "pretrained": pretrained}
    if pretrained:
        network = _pretrained(model_name, chosen)
        if family.module.startswith("torchvision"):  # the designer's own families keep the designer's keys
            init_params["weights"] = pretrained_weights_name(model_name)
        init_params.update(chosen)
        init_params.update(recorded_options(network, model_name))
    else:
        network = build_network(model_name, flags=chosen)
        init_params.update(chosen)
    with staged(destination, "the untrained model") as staging:
        write_model_directory(staging, DesignerNet(network).state_dict(), family, init_params)


def _family(model_name: str) -> Family:
    try:
        return family_of_architecture(model_name)
    except KeyError as exc:
        raise InvalidParameterError(
            f"'{model_name}' is not a supported network.",
            f"Choose one of {', '.join(ARCHITECTURES)}.",
            subject="Parameter model_name",
        ) from exc


def _check_flags(family: Family, flags: dict[str, bool]) -> dict[str, bool]:
    """The family's flags: those given, the family's defaults for the rest; a flag of another family refused."""
    foreign = sorted(set(flags) - set(family.flags))
    if foreign:
        owners = {flag: [f.class_name for f in FAMILIES.values() if flag in f.flags] for flag in foreign}
        shown = "; ".join(f"{flag} is for {', '.join(names)}" for flag, names in owners.items())
        raise InvalidParameterError(
            f"{shown}, not {family.class_name}.",
            "Leave it unset for this network.",
            subject=f"Parameter {foreign[0]}",
        )
    return {**family.flags, **flags}


def _pretrained(model_name: str, flags: dict[str, bool]):
    from .model.networks import build_pretrained_network

    try:
        return build_pretrained_network(model_name, flags)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise InvalidModelDirectoryError(
            f"the ImageNet weights of {model_name} could not be loaded ({exc}).",
            "Check the compute's network access, or place the torchvision weights file in "
            "$TORCH_HOME/hub/checkpoints, or set pretrained to false.",
            subject="Pretrained weights",
        ) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train_pytorch_model.init_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-name", required=True, help=", ".join(ARCHITECTURES))
    parser.add_argument("--pretrained", default="true")
    for flag in ALL_FLAGS:
        owners = ", ".join(family.class_name for family in FAMILIES.values() if flag in family.flags)
        parser.add_argument(f"--{flag.replace('_', '-')}", default=None, help=f"{owners} only")
    parser.add_argument("--untrained-model", required=True, type=path_argument, help="output folder")

    def body() -> None:
        args = parser.parse_args(argv)
        given = {flag: getattr(args, flag) for flag in ALL_FLAGS}
        # An unset optional input renders as nothing, or as an empty value.
        flags = {flag: parse_bool(flag, value) for flag, value in given.items() if value not in (None, "")}
        write_untrained_model(
            Path(args.untrained_model), args.model_name, parse_bool("pretrained", args.pretrained), flags
        )
        print(f"Untrained {args.model_name} written to {args.untrained_model}")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
