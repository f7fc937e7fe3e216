"""Image transforms shared by every data module.

The CPU workers only decode, crop and flip: they hand uint8 tensors [3, H, W] to the loader, and the
ImageClassifier converts to float and normalises on the device (less host work, 4x less host-to-device traffic).
"""

from __future__ import annotations

from collections.abc import Callable

from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The paper's evaluation resizes the short side to 256 and centre-crops 224: the same ratio at other sizes.
EVAL_RESIZE_RATIO = 256 / 224


def train_transform(
    image_size: int = 224, scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True
) -> Callable:
    """RandomResizedCrop(image_size) and a horizontal flip (the paper's training augmentation), as uint8."""
    steps: list = [v2.RandomResizedCrop(image_size, scale=scale, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToImage(), v2.ToPureTensor()]
    return v2.Compose(steps)


def eval_transform(image_size: int = 224, resize_size: int | None = None) -> Callable:
    """Resize the short side (default image_size * 256/224) and centre-crop image_size, as uint8."""
    resize_size = resize_size or round(image_size * EVAL_RESIZE_RATIO)
    return v2.Compose(
        [
            v2.Resize(resize_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToImage(),
            v2.ToPureTensor(),
        ]
    )
