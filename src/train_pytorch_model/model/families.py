"""The allowlist of networks a model folder may name: every image classifier torchvision builds, grouped by the
torchvision class that builds it, with what training and scoring need to know of each.

Torch-free, so that reading a folder's spec and checking a command line's model name import nothing heavy. A
model folder names its network by a Python module and class (the designer's convention); those names are only
looked up here: nothing named in a model folder is ever imported. The list is fixed, not read from the installed
torchvision, so that a newer torchvision never silently adds or drops a choice (a test compares the two).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The designer's module paths, kept so that what we write loads in the designer and the other way round.
DESIGNER_MODULE = "azureml.designer.modules.dl.pytorch.initialize_models.vision.classification"
RESNET_MODULE = f"{DESIGNER_MODULE}.resnet"
DENSENET_MODULE = f"{DESIGNER_MODULE}.densenet"
# Families the designer never had are recorded under torchvision's module and class names.
TORCHVISION_MODULE = "torchvision.models"

# The smallest side any image is trained at: smaller images are scaled up to it.
MIN_SIDE = 32


@dataclass(frozen=True)
class Family:
    """The architectures one torchvision class builds, and what they need."""

    name: str  # the key of FAMILIES (torchvision's builder module)
    module: str  # the module a model folder records
    class_name: str  # the class a model folder records: torchvision's own
    architectures: tuple[str, ...]
    default: str
    flags: dict[str, bool] = field(default_factory=dict)  # the family's yes/no init parameters, and defaults
    heads: tuple[str, ...] = ("fc",)  # classifier layers (dotted paths in the network), the main one first
    min_size: int = MIN_SIDE  # the smallest input side the network trains at
    min_size_without_aux: int | None = None  # the same with its auxiliary classifiers off
    fixed_size: int | None = None  # the one input side the network takes (MaxViT)
    aux_weight: float = 0.0  # the weight of each auxiliary classifier's loss in training (Inception, GoogLeNet)
    batchnorm: bool = True
    # Init parameters that the pretrained weights set (torchvision's transform_input): recorded, not chosen.
    recorded: tuple[str, ...] = ()

    @property
    def flag(self) -> str | None:
        """The designer families' single flag (ResNet: zero_init_residual, DenseNet: memory_efficient)."""
        return next(iter(self.flags), None)


def _family(name: str, class_name: str, architectures: tuple[str, ...], **facts) -> Family:
    facts.setdefault("module", TORCHVISION_MODULE)
    facts.setdefault("default", architectures[0])
    return Family(name=name, class_name=class_name, architectures=architectures, **facts)


FAMILIES = {
    family.name: family
    for family in (
        _family(
            "resnet",
            "ResNet",
            (
                "resnet18",
                "resnet34",
                "resnet50",
                "resnet101",
                "resnet152",
                "resnext50_32x4d",
                "resnext101_32x8d",
                "resnext101_64x4d",
                "wide_resnet50_2",
                "wide_resnet101_2",
            ),  # fmt: skip
            module=RESNET_MODULE,
            default="resnext101_32x8d",
            flags={"zero_init_residual": False},
        ),
        _family(
            "densenet",
            "DenseNet",
            ("densenet121", "densenet161", "densenet169", "densenet201"),
            module=DENSENET_MODULE,
            default="densenet201",
            flags={"memory_efficient": False},
            heads=("classifier",),
        ),
        _family("alexnet", "AlexNet", ("alexnet",), heads=("classifier.6",), min_size=64, batchnorm=False),
        _family(
            "convnext",
            "ConvNeXt",
            ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"),
            heads=("classifier.2",),
            batchnorm=False,
        ),
        _family(
            "efficientnet",
            "EfficientNet",
            (
                "efficientnet_b0",
                "efficientnet_b1",
                "efficientnet_b2",
                "efficientnet_b3",
                "efficientnet_b4",
                "efficientnet_b5",
                "efficientnet_b6",
                "efficientnet_b7",
                "efficientnet_v2_s",
                "efficientnet_v2_m",
                "efficientnet_v2_l",
            ),  # fmt: skip
            heads=("classifier.1",),
        ),
        _family(
            "googlenet",
            "GoogLeNet",
            ("googlenet",),
            flags={"aux_logits": False},  # torchvision's pretrained GoogLeNet drops them too
            heads=("fc", "aux1.fc2", "aux2.fc2"),
            aux_weight=0.3,  # the GoogLeNet paper's weight for each of its two auxiliary classifiers
            recorded=("transform_input",),
        ),
        _family(
            "inception",
            "Inception3",
            ("inception_v3",),
            flags={"aux_logits": True},
            heads=("fc", "AuxLogits.fc"),
            min_size=299,  # its auxiliary classifier needs 17x17 features
            min_size_without_aux=76,
            aux_weight=0.4,  # Inception v3's own weight for its auxiliary classifier
            recorded=("transform_input",),
        ),
        _family("maxvit", "MaxVit", ("maxvit_t",), heads=("classifier.5",), min_size=224, fixed_size=224),
        _family(
            "mnasnet", "MNASNet", ("mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"), heads=("classifier.1",)
        ),
        _family("mobilenet_v2", "MobileNetV2", ("mobilenet_v2",), heads=("classifier.1",)),
        _family("mobilenet_v3", "MobileNetV3", ("mobilenet_v3_large", "mobilenet_v3_small"), heads=("classifier.3",)),
        _family(
            "regnet",
            "RegNet",
            (
                "regnet_x_400mf",
                "regnet_x_800mf",
                "regnet_x_1_6gf",
                "regnet_x_3_2gf",
                "regnet_x_8gf",
                "regnet_x_16gf",
                "regnet_x_32gf",
                "regnet_y_400mf",
                "regnet_y_800mf",
                "regnet_y_1_6gf",
                "regnet_y_3_2gf",
                "regnet_y_8gf",
                "regnet_y_16gf",
                "regnet_y_32gf",
                "regnet_y_128gf",
            ),  # fmt: skip
        ),
        _family(
            "shufflenetv2",
            "ShuffleNetV2",
            ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"),
        ),
        _family(
            "squeezenet", "SqueezeNet", ("squeezenet1_0", "squeezenet1_1"), heads=("classifier.1",), batchnorm=False
        ),
        _family(
            "swin_transformer",
            "SwinTransformer",
            ("swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b"),
            heads=("head",),
            batchnorm=False,
        ),
        _family(
            "vgg",
            "VGG",
            ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"),
            heads=("classifier.6",),
        ),
        _family(
            "vision_transformer",
            "VisionTransformer",
            ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"),
            heads=("heads.head",),
            batchnorm=False,
        ),
    )
}

# (module, class) pairs accepted in a model folder, mapped to a family.
ALLOWED_CLASSES = {
    **{(family.module, family.class_name): name for name, family in FAMILIES.items()},
    ("train_pytorch_model.models", "ResNet"): "resnet",  # folders written by this project's first versions
    ("train_pytorch_model.models", "DenseNet"): "densenet",
}

# What the designer's own ResNet and DenseNet modules offer, and so the components that rebuild them.
DESIGNER_ARCHITECTURES = {
    "resnet": tuple(a for a in FAMILIES["resnet"].architectures if a != "resnext101_64x4d"),
    "densenet": FAMILIES["densenet"].architectures,
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


def has_batchnorm(architecture: str) -> bool:
    """Whether the network normalises with BatchNorm (which cannot train on a batch of one image)."""
    family = family_of_architecture(architecture)
    return architecture.endswith("_bn") if family.name == "vgg" else family.batchnorm


def patch_size(architecture: str) -> int:
    """The side of a Vision Transformer's patches (its input side must be a multiple); 1 for other networks."""
    if family_of_architecture(architecture).name == "vision_transformer":
        return int(architecture.rsplit("_", 1)[1])
    return 1


def training_side(architecture: str, side: int, aux_logits: bool = True) -> int:
    """The side a network trains at when side is asked for: raised to its minimum, set to its one size, rounded
    up to a multiple of its patch."""
    family = family_of_architecture(architecture)
    if family.fixed_size is not None:
        return family.fixed_size
    minimum = family.min_size if aux_logits else family.min_size_without_aux or family.min_size
    multiple = patch_size(architecture)
    side = max(side, minimum)
    return -(-side // multiple) * multiple
