"""Hostile inputs built on purpose (shared by the tests of the bounds and by measurements in docs/limits.md)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

from kdsed.bundle import MANIFEST_FILE, sha256_file

INFLATED_VALUES = 100_000_000  # float32 zeros: 400 MB once inflated
_PLACEHOLDER = 70_000  # a tensor length that torch pickles as a 4-byte int, patched in place


def inflating_weights(path: Path, values: int = INFLATED_VALUES) -> Path:
    """A torch weights archive of one tensor of `values` zeros whose members are deflated (~390 KB on disk).

    torch.save writes members uncompressed; torch.load inflates deflated ones anyway, so this file
    costs 4 * `values` bytes of memory to load although it is small. Nothing of that size is ever held
    while it is built: the zeros are streamed into the deflater.
    """
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(_PLACEHOLDER)}, buf)
    source = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    old, new = _PLACEHOLDER.to_bytes(4, "little"), values.to_bytes(4, "little")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in source.infolist():
            if info.filename.endswith("data.pkl"):
                pickled = source.read(info)
                assert pickled.count(old) == 2  # the storage's length and the tensor's shape
                out.writestr(info.filename, pickled.replace(old, new))
            elif info.filename.endswith("data/0"):
                with out.open(info.filename, "w", force_zip64=True) as member:
                    block = bytes(1 << 22)
                    for start in range(0, 4 * values, len(block)):
                        member.write(block[: min(len(block), 4 * values - start)])
            else:
                out.writestr(info.filename, source.read(info))
    return path


def swap_weights(bundle: Path, class_name: str, weights: Path) -> Path:
    """Put `weights` in place of `class_name`'s model file and fix the manifest's checksums (they are no defence)."""
    manifest_path = bundle / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    target = bundle / manifest["class_specs"][class_name]["model_file"]
    target.write_bytes(weights.read_bytes())
    for spec in manifest["class_specs"].values():
        if spec["model_file"] == manifest["class_specs"][class_name]["model_file"]:
            spec["sha256"] = sha256_file(target)
    manifest_path.write_text(json.dumps(manifest))
    return target


def billion_laughs(levels: int = 9, fanout: int = 9) -> str:
    """A YAML document whose nested aliases expand to fanout ** levels values, ending in an unknown key."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * fanout)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fanout)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\ndistill: {pases: 3}\n"
