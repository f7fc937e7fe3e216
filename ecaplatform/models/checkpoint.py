"""Loading released ECA-Net checkpoints (and our own) safely, with the architecture read from the tensors.

A released file (e.g. eca_resnet50_k3557.pth.tar) is a plain torch.save dict {epoch, arch, state_dict,
best_prec1, optimizer} whose state_dict keys carry DataParallel's `module.` prefix. Its `arch` field can be
wrong, so the architecture, attention kind, ECA kernels, SE ratio and class count are all worked out from the
tensor names and shapes. Files are read with torch.load(weights_only=True): a pickle that would run code is
refused before anything in it runs. Everything here acts on a state dict or on a model it is given: building
models is factory.py's job.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .registry import find_model, list_models
from .resnet import RESNET_LAYOUTS

# DataParallel / DistributedDataParallel wrap the model as `module`, torch.compile as `_orig_mod`.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose tensors do not fit the model."""


def _is_loaded_object(dotted: str) -> bool:
    """Whether `module.attr` names an object of a module already imported (nothing is imported to find out)."""
    module, _, attr = dotted.rpartition(".")
    return bool(module) and hasattr(sys.modules.get(module), attr)


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6 is a zip archive whose first entry is data.pkl
# The older format opens with a pickled magic number (LONG1 opcode, 10 bytes), after the protocol header.
_LEGACY_NUMBER = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
_LEGACY_HEAD = b"\x80\x02" + _LEGACY_NUMBER  # as torch.save writes it (pickle protocol 2)
_TORCH_ZIP, _TORCH_LEGACY, _PICKLE = "torch zip", "torch legacy", "pickle"
_NOT_TORCH = ", not a file written by torch.save"


def _zip_names(path: Path, head: bytes) -> list[str]:
    """The entries of a zip archive; of one cut short (no central directory at its end), its first entry's name."""
    with contextlib.suppress(zipfile.BadZipFile, OSError, ValueError, EOFError), zipfile.ZipFile(path) as archive:
        return archive.namelist()
    name_length = int.from_bytes(head[26:28], "little") if len(head) >= 30 else 0
    return [head[30:30 + name_length].decode("utf-8", "replace")] if name_length else []


def _sniff(path: Path) -> str:
    """What a file's first bytes say it is: one of the torch formats, a plain pickle, or (for anything else) the
    words that describe it. torch.load is tried only on the first three."""
    with path.open("rb") as file:
        head = file.read(512)
    if not head:
        return f"an empty file (0 bytes){_NOT_TORCH}"
    if head.startswith(_ZIP_MAGIC) or _ZIP_MAGIC.startswith(head):
        names = _zip_names(path, head)
        if not names or any(n.endswith("data.pkl") for n in names):  # a cut-off header: let torch say
            return _TORCH_ZIP
        return f"a zip archive holding {', '.join(map(repr, names[:3]))}{_NOT_TORCH}"
    if head[:1] == b"\x80" and (_LEGACY_HEAD.startswith(head[:15]) or _LEGACY_NUMBER in head[:24]):
        return _TORCH_LEGACY
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # pickle protocol 2 to 5
        return _PICKLE
    if head.startswith(b"\x1f\x8b"):
        return f"a gzip file{_NOT_TORCH}: unpack it and give the file inside"
    if head[257:262] == b"ustar":
        return f"a tar archive{_NOT_TORCH}: unpack it and give the file inside"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # a character cut in two at the end of the 512 bytes read is still text
        text = head[:err.start].decode("utf-8") if len(head) == 512 and err.start > 508 else ""
    if text and text.translate({9: None, 10: None, 13: None}).isprintable():
        return f"a text file starting {text.strip()[:30]!r}{_NOT_TORCH}"
    return f"binary data of no known format (first bytes {head[:8].hex(' ')}){_NOT_TORCH}"


def read_checkpoint(path: str | Path) -> object:
    """torch.load with weights_only=True, on the CPU, with errors that say what to do.

    Every failure is a one-line CheckpointError naming the file and what it is: a folder, an empty or text file,
    another archive, a torch.save file cut short, a plain pickle, or a pickle naming code (refused unrun).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory; give the checkpoint file inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    kind = _sniff(path)
    if kind not in (_TORCH_ZIP, _TORCH_LEGACY, _PICKLE):
        raise CheckpointError(f"could not read {str(path)!r}: it is {kind}")
    try:
        with warnings.catch_warnings():  # torch warns before it fails on a pickle protocol it did not write
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is long advice (including how to allow-list the global: we do not);
        # the reason sits after "WeightsUnpickler error:".
        message = str(err)
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if blocked and not _is_loaded_object(blocked.group(1)):
            # A legacy file cut off inside a GLOBAL opcode names a fragment ("torch._utils._reb"): not an attack.
            raise CheckpointError(
                f"could not read {str(path)!r} as a torch checkpoint: it names {blocked.group(1)!r}, an object "
                f"this Python does not have, so it is truncated or corrupted (copy it again) or pickles a class of "
                f"the code that trained it (re-save just the state_dict there)") from None
        if blocked:
            raise CheckpointError(
                f"refused to load {str(path)!r}: it references the Python object {blocked.group(1)}, which "
                f"torch.load(weights_only=True) will not unpickle because loading it could run arbitrary code. "
                f"Only tensors, dicts, lists and numbers are accepted; re-save just the state_dict from a "
                f"trusted environment.") from None
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", message, re.DOTALL)
        reason = found.group(1) if found else message.strip().partition("\n")[0]
    # Whatever else torch.load raises on a damaged file (IndexError, KeyError, struct.error, ...) says the same.
    except Exception as err:
        reason = str(err) if " " in str(err) else f"{type(err).__name__} {err}".strip()  # not a bare "101"
    reason = " ".join(reason.split(". ")[0].split()) or "no reason given"  # torch appends advice; one line
    if kind == _PICKLE:
        raise CheckpointError(f"could not read {str(path)!r}: it is a Python pickle{_NOT_TORCH} ({reason})")
    raise CheckpointError(f"could not read {str(path)!r} as a torch checkpoint: it is a torch.save file, truncated "
                          f"or corrupted ({reason}); copy it again (a .pth.tar file is a torch.save file, "
                          f"not a tar archive)")


def extract_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model's tensors from a released dict, a bare state_dict or a Lightning checkpoint, prefixes removed.

    Removes DataParallel's `module.`, torch.compile's `_orig_mod.` and, for Lightning checkpoints (keys under
    `model.`), keeps only the network's own keys.
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state_dict (or a dict with a 'state_dict' entry), "
                              f"got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: the state_dict holds no tensors (keys: {list(obj)[:5]}...)")

    def strip(key: str) -> str:
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        return key

    tensors = {strip(k): v for k, v in tensors.items()}
    if any(k.startswith("model.") for k in tensors):  # a Lightning checkpoint of our ImageClassifier
        tensors = {strip(k[len("model."):]): v for k, v in tensors.items() if k.startswith("model.")}
    return tensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model's tensors from a checkpoint file (read_checkpoint, then extract_state_dict)."""
    return extract_state_dict(read_checkpoint(path), str(path))


def compare_state_dicts(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """None if keys and shapes agree, else a message naming the first differing key and both shapes."""
    for key, tensor in expected.items():
        if key not in found:
            return f"first differing key {key!r}: model shape {list(tensor.shape)}, missing in the checkpoint"
        if tuple(found[key].shape) != tuple(tensor.shape):
            return (f"first differing key {key!r}: model shape {list(tensor.shape)}, "
                    f"checkpoint shape {list(found[key].shape)}")
    for key, tensor in found.items():
        if key not in expected:
            return f"first differing key {key!r}: not in the model, checkpoint shape {list(tensor.shape)}"
    return None


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                           hint: str = "") -> None:
    """load_state_dict(strict=True), after a key/shape check whose error names the first difference."""
    problem = compare_state_dicts(model.state_dict(), state_dict)
    if problem:
        raise CheckpointError(f"{source} does not fit the model: {problem}.{hint}")
    model.load_state_dict(state_dict, strict=True)


def load_checkpoint_into(model: nn.Module, path: str | Path, model_name: str = "the model") -> nn.Module:
    """Load a checkpoint file into a given model strictly; on a mismatch, the error also names the architecture
    the checkpoint itself holds and the arguments that would build it."""
    state_dict = read_state_dict(path)
    hint = ""
    with contextlib.suppress(CheckpointError):  # an unreadable architecture still gets the key error, unhinted
        hint = (f" The checkpoint holds {infer_architecture(state_dict)}: create it with those arguments, or let "
                f"load_official_checkpoint({str(path)!r}) work them out.")
    load_state_dict_strict(model, state_dict, f"checkpoint {str(path)!r} for {model_name}", hint)
    return model


def _block_indices(keys: list[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _attention_kind(keys: list[str]) -> str:
    if any(re.search(r"\.eca\.conv\.weight$", k) or re.search(r"conv\.\d+\.conv\.weight$", k) for k in keys):
        return "eca"
    if any(".se.fc." in k or re.search(r"conv\.\d+\.fc\.", k) for k in keys):
        return "se"
    if any(".cbam." in k or re.search(r"conv\.\d+\.channel\.mlp\.", k) for k in keys):
        return "cbam"
    return "none"


def _se_reduction(sd: Mapping[str, torch.Tensor], attention: str, default: int) -> int | None:
    """SE/CBAM ratio r from the first block's squeeze layer ([C/r, C] or [C/r, C, 1, 1])."""
    if attention not in ("se", "cbam"):
        return None
    suffix = ".fc.0.weight" if attention == "se" else ".channel.mlp.0.weight"
    weight = next(v for k, v in sd.items() if k.endswith(suffix))
    hidden, channels = weight.shape[:2]
    reduction = channels // hidden
    return None if reduction == default else reduction


@dataclass(frozen=True)
class ArchitectureSpec:
    """What a state dict holds: create_model(name, num_classes=num_classes, **kwargs) builds a model it fits."""

    name: str
    num_classes: int
    kwargs: dict[str, object]

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"num_classes": self.num_classes, **self.kwargs}.items())
        return f"{self.name}({args})"


def infer_architecture(sd: Mapping[str, torch.Tensor]) -> ArchitectureSpec:
    """The registered model, class count and constructor kwargs, worked out from tensor names and shapes."""
    keys = list(sd)
    attention = _attention_kind(keys)
    kwargs: dict[str, object] = {}
    if "conv1.weight" in sd and "layer1.0.conv1.weight" in sd and "fc.weight" in sd:
        block = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
        layers = tuple(len(_block_indices(keys, f"layer{i}.")) for i in range(1, 5))
        depth = next((d for d, (b, n) in RESNET_LAYOUTS.items() if b == block and n == layers), None)
        if depth is None:
            raise CheckpointError(f"ResNet with {block} blocks per stage {layers} is not a known depth; known: "
                                  f"{ {d: n for d, (_, n) in RESNET_LAYOUTS.items()} }")
        if attention == "eca":
            kernels = []
            for stage, blocks in enumerate(layers, start=1):
                ks = {sd[f"layer{stage}.{b}.eca.conv.weight"].shape[-1] for b in range(blocks)}
                if len(ks) != 1:
                    raise CheckpointError(f"layer{stage} mixes ECA kernel sizes {sorted(ks)}; "
                                          f"only one kernel per stage is supported")
                kernels.append(int(ks.pop()))
            kwargs["k_size"] = kernels
        family, num_classes = "resnet", sd["fc.weight"].shape[0]
    elif "features.0.0.weight" in sd and "classifier.1.weight" in sd:
        if attention == "eca":
            blocks = _block_indices(keys, "features.")
            kernels = []
            for b in blocks:
                eca = [v for k, v in sd.items() if re.fullmatch(rf"features\.{b}\.conv\.\d+\.conv\.weight", k)]
                if eca:
                    kernels.append(int(eca[0].shape[-1]))
            kwargs["k_size"] = kernels
        family, depth, num_classes = "mobilenet_v2", None, sd["classifier.1.weight"].shape[0]
    else:
        raise CheckpointError("cannot tell the architecture: expected ResNet keys (conv1.weight, "
                              "layer1.0.conv1.weight, fc.weight) or MobileNetV2 keys (features.0.0.weight, "
                              f"classifier.1.weight); first keys found: {keys[:5]}")
    name = find_model(family, depth, attention)
    if name is None:
        raise CheckpointError(f"the checkpoint holds a {family} (depth={depth}, attention={attention!r}), which is "
                              f"not a registered model; known models: {', '.join(list_models())}")
    # Only a ratio other than the family's constructor default (MobileNetV2 8, ResNet 16) becomes a kwarg.
    reduction = _se_reduction(sd, attention, 8 if family == "mobilenet_v2" else 16)
    if reduction is not None:
        kwargs["se_reduction"] = reduction
    return ArchitectureSpec(name, int(num_classes), kwargs)
