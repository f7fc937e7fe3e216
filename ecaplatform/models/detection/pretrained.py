"""A detector's backbone from an ImageNet classification checkpoint (released .pth.tar, bare state_dict or ours).

The classifier's names are the backbone's (backbone.body.conv1, .layer1.0.eca.conv, ...), so loading is strict:
everything but `fc` must fit, and an ECA kernel that differs (the released classifiers are k3557 / k3357, some
released detectors k5 / k3377) is named with the shapes, not silently skipped.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import CheckpointError, compare_state_dicts, extract_state_dict, read_checkpoint


@dataclass(frozen=True)
class BackboneInit:
    """What init_backbone loaded, for the run's provenance."""

    source: str  # the file path, "state_dict" for an in-memory one, or "none"
    sha256: str | None  # of the file
    tensors: int  # tensors loaded into the backbone
    skipped: tuple[str, ...]  # the classifier's own keys left out (fc.*)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def init_backbone(model: nn.Module, state_dict_or_path: Mapping[str, torch.Tensor] | str | Path | None
                  ) -> BackboneInit:
    """Load ImageNet weights into model.backbone.body strictly (fc dropped); None: keep the random
    initialisation, with a warning (the paper's detectors all start from ImageNet)."""
    if state_dict_or_path is None:
        warnings.warn("detector backbone not initialised from ImageNet: training starts from random weights, "
                      "unlike the paper's detectors", stacklevel=2)
        return BackboneInit("none", None, 0, ())
    if isinstance(state_dict_or_path, Mapping):
        source, sha, obj = "state_dict", None, state_dict_or_path
    else:
        path = Path(state_dict_or_path)
        source, obj = str(path), read_checkpoint(path)
        sha = _sha256(path)
    sd = extract_state_dict(obj, source)
    skipped = tuple(k for k in sd if k.startswith("fc."))
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    body = model.backbone.body
    expected = body.state_dict()
    for key, tensor in expected.items():  # some checkpoints predate BN's counter; it is unused in eval mode
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = tensor
    problem = compare_state_dicts(expected, sd)
    if problem:
        raise CheckpointError(f"backbone checkpoint {source} does not fit the detector's ResNet: {problem}; "
                              f"build the detector with the checkpoint's depth, attention and ECA k_size")
    body.load_state_dict(sd, strict=True)
    return BackboneInit(source, sha, len(sd), skipped)
