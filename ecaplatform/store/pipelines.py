"""The input pipelines a run can evaluate with, and which of them may verify a paper's claim.

Torch-free constants: the store, the verification rule and the leaderboard read them without a deep-learning
stack installed.
"""

from __future__ import annotations

REFERENCE_PIPELINE = "torchvision"

PIPELINE_DESCRIPTIONS: dict[str, str] = {
    "torchvision": "PIL decode + torchvision transforms (the paper's preprocessing)",
    "dali-cpu": "NVIDIA DALI, libjpeg-turbo decoding on the CPU",
    "dali-gpu": "NVIDIA DALI, nvJPEG decoding on the GPU",
}
PIPELINES: tuple[str, ...] = tuple(PIPELINE_DESCRIPTIONS)

VERIFYING_PIPELINES: frozenset[str] = frozenset({REFERENCE_PIPELINE})
"""The pipelines whose evaluations may verify a claim: only the reference one. The paper's numbers come from PIL
preprocessing; another JPEG decoder or resizer shifts top-1 by a few tenths of a point, which is the size of the
gaps between the methods the paper compares. A DALI evaluation is recorded and shown, never verifying."""

UNRECORDED_PIPELINE_LABEL = f"{REFERENCE_PIPELINE} (not recorded)"


def pipeline_label(pipeline: str | None) -> str:
    """How a result's pipeline is shown: its name, or, for a result stored before pipelines were recorded (NULL),
    the reference pipeline, the only one there was then."""
    return pipeline if pipeline is not None else UNRECORDED_PIPELINE_LABEL
