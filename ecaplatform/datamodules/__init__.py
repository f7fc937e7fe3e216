"""LightningDataModules: ImageNet (folder layout), COCO 2017 (detection), digits (a small real data set for the
CPU), synthetic.

Every module yields uint8 images [B, 3, H, W] with int64 labels (the classifier normalises on the device),
takes a GLOBAL batch size, evaluates each sample exactly once under DDP, and exposes `dataset_name`,
`num_classes` and `fingerprint(split)`.
"""

from ecaplatform.datamodules.base import (
    ClassificationDataModule,
    DataError,
    ExactDistributedSampler,
    per_device_batch_size,
)
from ecaplatform.datamodules.coco import CocoDataModule
from ecaplatform.datamodules.coco_shapes import CocoShapesDataModule
from ecaplatform.datamodules.digits import DigitsDataModule
from ecaplatform.datamodules.folder_index import scan_split
from ecaplatform.datamodules.imagenet import ImageNetDataModule
from ecaplatform.datamodules.synthetic import SyntheticDataModule
from ecaplatform.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassificationDataModule",
    "CocoDataModule",
    "CocoShapesDataModule",
    "DataError",
    "DigitsDataModule",
    "ExactDistributedSampler",
    "ImageNetDataModule",
    "SyntheticDataModule",
    "eval_transform",
    "per_device_batch_size",
    "scan_split",
    "train_transform",
]
