"""Any file that is no readable checkpoint gives ONE line naming the file and what it is, from each way in:
read_checkpoint (the one reader), create_model(checkpoint=...) and load_official_checkpoint."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ecaplatform.models import CheckpointError, create_model, load_official_checkpoint
from ecaplatform.models.checkpoint import read_checkpoint


def _torch_bytes(obj: object, zip_format: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


STATE = {"state_dict": {"conv.weight": torch.arange(6.0).reshape(2, 3), "bn.bias": torch.ones(4)}}
WHOLE = {fmt: _torch_bytes(STATE, fmt) for fmt in (True, False)}  # the zip format and the legacy one


def _zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hi")
    return buffer.getvalue()


def _tar_of(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("model.pth")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


KINDS: dict[str, tuple[Callable[[Path], None], str]] = {
    "text": (lambda p: p.write_text("hello\n"), "it is a text file starting 'hello', not a file written by torch.save"),
    "random bytes": (lambda p: p.write_bytes(bytes(range(7, 256))), "it is binary data of no known format (first "
                                                                     "bytes 07 08 09 0a 0b 0c 0d 0e)"),
    "empty": (lambda p: p.write_bytes(b""), "it is an empty file (0 bytes), not a file written by torch.save"),
    "a directory": (lambda p: p.mkdir(), "is a directory; give the checkpoint file inside it"),
    "a zip not torch's": (lambda p: p.write_bytes(_zip_of_text()), "it is a zip archive holding 'notes.txt', not"),
    "a gzip file": (lambda p: p.write_bytes(gzip.compress(WHOLE[True])), "it is a gzip file, not a file written by "
                                                                         "torch.save: unpack it"),
    "a tar archive": (lambda p: p.write_bytes(_tar_of(WHOLE[True])), "it is a tar archive, not a file written"),
    "truncated (zip format)": (lambda p: p.write_bytes(WHOLE[True][:300]), "it is a torch.save file, truncated or "
                                                                           "corrupted (PytorchStreamReader failed"),
    "truncated (legacy format)": (lambda p: p.write_bytes(WHOLE[False][:100]), "it is a torch.save file, truncated "
                                                                               "or corrupted (EOFError)"),
    "a plain pickle": (lambda p: p.write_bytes(pickle.dumps([1, 2], protocol=4)), "it is a Python pickle, not a file "
                                                                                  "written by torch.save"),
    "torch.save of a list": (lambda p: torch.save([1, 2], p), "expected a state_dict (or a dict with a 'state_dict' "
                                                              "entry), got list"),
    "a dict without a state dict": (lambda p: torch.save({"epoch": 3}, p), "the state_dict holds no tensors (keys: "
                                                                           "['epoch']"),
}  # fmt: skip

ENTRY_POINTS: dict[str, Callable[[Path], object]] = {
    "create_model": lambda p: create_model("resnet18", num_classes=2, checkpoint=p),
    "load_official_checkpoint": load_official_checkpoint,
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_unreadable_file_is_named_in_one_line(tmp_path: Path, kind: str, entry: str) -> None:
    make, words = KINDS[kind]
    path = tmp_path / "x.pth"
    make(path)
    with warnings.catch_warnings(record=True) as warned, pytest.raises(CheckpointError) as raised:
        warnings.simplefilter("always")
        ENTRY_POINTS[entry](path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and words in message, message
    assert not warned, [str(w.message) for w in warned]  # torch's own warnings about the file stay unprinted


# Byte strings that reach each branch: arbitrary ones, ones opening like each format, and real files cut anywhere.
OPENINGS = [b"PK\x03\x04", b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.", b"\x80\x02", b"\x80\x04", b"\x1f\x8b"]
FILE_BYTES = st.one_of(
    st.binary(max_size=700),
    st.text(max_size=200).map(str.encode),
    st.tuples(st.sampled_from(OPENINGS), st.binary(max_size=700)).map(b"".join),
    st.tuples(st.sampled_from(list(WHOLE.values())), st.integers(0, max(map(len, WHOLE.values())))).map(
        lambda whole_cut: whole_cut[0][: whole_cut[1]]
    ),
)
PREFIXES = ("could not read ", "refused to load ")


@given(FILE_BYTES)
def test_any_bytes_load_as_a_checkpoint_or_fail_in_one_line_naming_the_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.pth"
        path.write_bytes(data)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            try:
                loaded = read_checkpoint(path)
            except CheckpointError as err:
                message = str(err)
                assert message.startswith(tuple(p + repr(str(path)) for p in PREFIXES)), message
                assert "\n" not in message and len(message) < 400, message
            else:  # only a whole file loads, and to what was saved
                assert data in WHOLE.values()
                torch.testing.assert_close(loaded, STATE)
        assert not warned, [str(w.message) for w in warned]
