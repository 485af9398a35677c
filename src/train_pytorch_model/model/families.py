"""The allowlist of networks a model folder may name: families, their architectures and the designer's module
and class names, and the normalization statistics each kind of weights expects.

Torch-free, so that reading a folder's spec and checking a command line's model name import nothing heavy. A
model folder names its network by a Python module and class (the designer's convention); those names are only
looked up here: nothing named in a model folder is ever imported.
"""

from __future__ import annotations

from dataclasses import dataclass

# The designer's module paths, kept so that what we write loads in the designer and the other way round.
DESIGNER_MODULE = "azureml.designer.modules.dl.pytorch.initialize_models.vision.classification"
RESNET_MODULE = f"{DESIGNER_MODULE}.resnet"
DENSENET_MODULE = f"{DESIGNER_MODULE}.densenet"


@dataclass(frozen=True)
class Family:
    name: str
    module: str
    class_name: str
    architectures: tuple[str, ...]
    default: str
    flag: str  # the family's own boolean init parameter
    min_size: int  # the smallest input side the network handles


FAMILIES = {
    "resnet": Family(
        name="resnet",
        module=RESNET_MODULE,
        class_name="ResNet",
        architectures=(
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet101",
            "resnet152",
            "resnext50_32x4d",
            "resnext101_32x8d",
            "wide_resnet50_2",
            "wide_resnet101_2",
        ),
        default="resnext101_32x8d",
        flag="zero_init_residual",
        min_size=32,
    ),
    "densenet": Family(
        name="densenet",
        module=DENSENET_MODULE,
        class_name="DenseNet",
        architectures=("densenet121", "densenet161", "densenet169", "densenet201"),
        default="densenet201",
        flag="memory_efficient",
        min_size=32,
    ),
}

# (module, class) pairs accepted in a model folder, mapped to a family.
ALLOWED_CLASSES = {
    (RESNET_MODULE, "ResNet"): "resnet",
    (DENSENET_MODULE, "DenseNet"): "densenet",
    ("train_pytorch_model.models", "ResNet"): "resnet",
    ("train_pytorch_model.models", "DenseNet"): "densenet",
}

# Every architecture the allowlist builds, in family order (for messages and help texts).
ARCHITECTURES = tuple(a for family in FAMILIES.values() for a in family.architectures)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DESIGNER_MEAN = (0.5, 0.5, 0.5)
DESIGNER_STD = (0.5, 0.5, 0.5)


def family_of_architecture(architecture: str) -> Family:
    for family in FAMILIES.values():
        if architecture in family.architectures:
            return family
    raise KeyError(f"'{architecture}' is not a supported network; supported: {', '.join(ARCHITECTURES)}")
