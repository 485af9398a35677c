"""A faithful baseline of the original designer module's training recipe (../shared/designer-formats.md, section
4), for benchmarks/recipe.py to measure ours against on the same images:

- the images as they are (ToTensor, then Normalize(0.5, 0.5)): no resize, so a dataset of mixed sizes fails;
- a fresh network (the untrained folder's weights are not used), SGD with Nesterov momentum 0.9 and weight decay
  1e-4 on every parameter;
- the rate per epoch (W = 0): (peak - 1e-7) (1 - e / E)^2 + 1e-7, stepped after each epoch's validation and
  not on the epoch that stops;
- shuffled batches with the last partial one dropped; early stopping against the previous epoch's loss;
- the model returned is the last epoch's (the original's best-model bug), so its accuracy is that epoch's.
"""

from __future__ import annotations

from pathlib import Path

LR_END = 1e-7
POWER = 2
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4


def train_designer(train: Path, valid: Path, classes: int, epochs: int, seed: int, lr: float = 0.001,
                   batch_size: int = 16, patience: int = 3) -> float | None:  # fmt: skip
    """The validation accuracy of the model the original would write; None when it cannot train (images of
    different sizes, which its collation refuses)."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torchvision import transforms

    torch.manual_seed(seed)
    prepare = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    loader = torchvision.datasets.folder.default_loader  # PIL, converted to RGB as the original reads images
    train_set = torchvision.datasets.ImageFolder(str(train), transform=prepare, loader=loader)
    valid_set = torchvision.datasets.ImageFolder(str(valid), transform=prepare, loader=loader)
    if len({image.shape for image, _ in train_set} | {image.shape for image, _ in valid_set}) > 1:
        return None
    generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size, shuffle=True, drop_last=True,
                                               generator=generator)  # fmt: skip
    valid_loader = torch.utils.data.DataLoader(valid_set, batch_size)
    model = torchvision.models.resnet18(num_classes=classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, nesterov=True,
                                weight_decay=WEIGHT_DECAY)  # fmt: skip

    def rate(epoch: int) -> float:
        return ((lr - LR_END) * (1 - epoch / epochs) ** POWER + LR_END) / lr

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    last_loss, counter, accuracy = None, 0, 0.0
    for _ in range(epochs):
        model.train()
        for images, targets in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(images), targets).backward()
            optimizer.step()
        model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        with torch.no_grad():
            for images, targets in valid_loader:
                logits = model(images)
                loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
                correct += int((logits.argmax(1) == targets).sum())
                seen += len(targets)
        loss, accuracy = loss_sum / seen, correct / seen
        if last_loss is not None:
            counter = counter + 1 if loss >= last_loss else 0
        last_loss = loss
        if counter >= patience:
            break
        scheduler.step()
    return accuracy
