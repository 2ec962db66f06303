"""Per-class winner bundles: what the coordinator logs per class, and what `kdsed.predict` runs.

A *class bundle* is a directory holding one class winner: `weights.pt` (a plain
dict of tensors) and `class.json` (class name, model config, post-processing,
feature config, normalizer, provenance, sha256 of the weights). A *bundle* is
the assembly of all 10 class bundles: `manifest.json` plus `models/*.pt`, where
classes whose winners are the same trained model share one weights file.

Everything is verified on read (schema, class list, sha256 of every weights
file) and weights are only ever read with `torch.load(weights_only=True)`, so a
tampered or malicious bundle is refused without running any of its code.
Untrusted sizes are checked before anything is read into memory (docs/limits.md):
the JSON files' sizes, the model's parameter count (built on the meta device), the
weights file's size against that model's tensors, and its zip headers (torch.save
stores every member uncompressed, so a compressed member that would inflate is
refused unread). Directories are written to a temporary sibling and renamed into place.

Provenance is free-form JSON; `pass`, `variant` and `val_f1` are shown by
`python -m kdsed.registry pull`, and `val_f1` becomes `PostprocessChoice.f1`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from kdsed.atomic import replace_dir_atomic
from kdsed.config import ConfigError, FeatureConfig, ModelConfig, from_dict, to_dict
from kdsed.constants import CLASSES
from kdsed.features import Normalizer
from kdsed.limits import (MAX_BUNDLE_JSON_BYTES, MAX_MODEL_PARAMETERS, MAX_SAMPLE_RATE_HZ, MAX_WEIGHTS_INDEX_BYTES,
                          WEIGHTS_OVERHEAD_BYTES)
from kdsed.search import PostprocessChoice

CLASS_BUNDLE_FORMAT = "kdsed-class-bundle"
BUNDLE_FORMAT = "kdsed-bundle"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
CLASS_FILE = "class.json"
MANIFEST_FILE = "manifest.json"
MODELS_DIR = "models"


class BundleError(ValueError):
    """A bundle or class bundle is missing, malformed, or fails verification."""


@dataclass(frozen=True)
class ClassSpec:
    """One class's winner: which weights, which network, which post-processing, and where it came from."""

    class_name: str
    model_file: str  # relative to the directory it was read from
    model_config: ModelConfig
    median_window: int
    gaussian_sigma: float
    threshold: float
    sha256: str
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry of this class."""
        return {
            "class_name": self.class_name, "model_file": self.model_file, "model_config": to_dict(self.model_config),
            "postprocess": {"median_window": self.median_window, "gaussian_sigma": self.gaussian_sigma,
                            "threshold": self.threshold},
            "sha256": self.sha256, "provenance": self.provenance,
        }


@dataclass(frozen=True)
class ClassBundle:
    """A verified class bundle directory."""

    directory: Path
    spec: ClassSpec
    feature_config: FeatureConfig
    normalizer: Normalizer


@dataclass
class Bundle:
    """A verified bundle: features, normalizer, per-class specs (CLASSES order) and the loaded models."""

    directory: Path
    feature_config: FeatureConfig
    normalizer: Normalizer
    classes: dict[str, ClassSpec]
    models: dict[str, nn.Module]  # keyed by model_file, in eval mode on the CPU

    def model_groups(self) -> dict[str, list[int]]:
        """Class indices served by each distinct model file."""
        groups: dict[str, list[int]] = {}
        for c, name in enumerate(CLASSES):
            groups.setdefault(self.classes[name].model_file, []).append(c)
        return groups

    def postprocess_choice(self) -> PostprocessChoice:
        """The per-class windows, sigmas and thresholds as a `PostprocessChoice` (F1 from provenance)."""
        specs = [self.classes[name] for name in CLASSES]
        return PostprocessChoice(
            median_windows=tuple(s.median_window for s in specs),
            gaussian_sigmas=tuple(s.gaussian_sigma for s in specs),
            thresholds=tuple(s.threshold for s in specs),
            f1=tuple(_float_or_nan(s.provenance.get("val_f1")) for s in specs),
        )


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_class_bundle(directory: Path | str, *, class_name: str, model_config: ModelConfig,
                       state_dict: Mapping[str, torch.Tensor], median_window: int, gaussian_sigma: float,
                       threshold: float, feature_config: FeatureConfig, normalizer: Normalizer,
                       provenance: Mapping[str, Any]) -> Path:
    """Write one class winner (weights.pt + class.json) atomically to `directory`; return it."""
    if class_name not in CLASSES:
        raise BundleError(f"class_name {class_name!r} is not one of {', '.join(CLASSES)}")
    _check_postprocess(median_window, gaussian_sigma, threshold, f"class bundle for {class_name}")
    # Fresh contiguous CPU copies in sorted key order: the same weights always give the same bytes.
    weights = {k: state_dict[k].detach().to("cpu").contiguous().clone() for k in sorted(state_dict)}
    buf = io.BytesIO()
    torch.save(weights, buf)
    spec = {
        "format": CLASS_BUNDLE_FORMAT, "format_version": FORMAT_VERSION, "class_name": class_name,
        "model_config": to_dict(model_config),
        "postprocess": {"median_window": int(median_window), "gaussian_sigma": float(gaussian_sigma),
                        "threshold": float(threshold)},
        "feature_config": to_dict(feature_config), "normalizer": normalizer.to_dict(),
        "provenance": _jsonable(dict(provenance), "provenance"),
        "weights_file": WEIGHTS_FILE, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
    }

    def fill(tmp: Path) -> None:
        (tmp / WEIGHTS_FILE).write_bytes(buf.getvalue())
        (tmp / CLASS_FILE).write_text(json.dumps(spec, indent=2))

    return replace_dir_atomic(Path(directory), fill)


def read_class_bundle(directory: Path | str) -> ClassBundle:
    """Read and verify a class bundle (schema and weights checksum); weights are not loaded."""
    directory = Path(directory)
    path = directory / CLASS_FILE
    data = _read_json(path, CLASS_BUNDLE_FORMAT)
    where = str(path)
    weights_file = _get(data, "weights_file", str, where)
    if weights_file != WEIGHTS_FILE:
        raise BundleError(f"{where}: weights_file is {weights_file!r}, expected {WEIGHTS_FILE!r}")
    spec = _class_spec(data, weights_file, where)
    _check_file_size(directory / weights_file, _MAX_WEIGHTS_BYTES, "a weights file")
    _verify_checksum(directory / weights_file, spec.sha256, where)
    return ClassBundle(directory, spec, _feature_config(data, where), _normalizer(data, where))


def assemble_bundle(class_dirs: Mapping[str, Path | str], out_dir: Path | str) -> Path:
    """Assemble one class bundle per class into a bundle at `out_dir` (replaced only once complete)."""
    missing = [c for c in CLASSES if c not in class_dirs]
    unknown = sorted(set(class_dirs) - set(CLASSES))
    if missing or unknown:
        raise BundleError(f"a bundle needs exactly one class bundle per class; missing: {missing or 'none'}, "
                          f"unknown: {unknown or 'none'}")
    parts = {name: read_class_bundle(class_dirs[name]) for name in CLASSES}
    for name, part in parts.items():
        if part.spec.class_name != name:
            raise BundleError(f"{part.directory / CLASS_FILE}: holds class {part.spec.class_name!r}, "
                              f"expected {name!r}")
    first = parts[CLASSES[0]]
    for name, part in parts.items():
        if part.feature_config != first.feature_config:
            raise BundleError(f"{part.directory / CLASS_FILE}: feature config differs from {CLASSES[0]}'s "
                              f"({first.directory / CLASS_FILE}); all winners must share one feature config")
        if not (np.array_equal(part.normalizer.mean, first.normalizer.mean)
                and np.array_equal(part.normalizer.std, first.normalizer.std)):
            raise BundleError(f"{part.directory / CLASS_FILE}: normalizer differs from {CLASSES[0]}'s; "
                              "all winners must share one normalizer")
    manifest = {
        "format": BUNDLE_FORMAT, "format_version": FORMAT_VERSION, "classes": list(CLASSES),
        "feature_config": to_dict(first.feature_config), "normalizer": first.normalizer.to_dict(),
        "class_specs": {},
    }
    sources: dict[str, Path] = {}  # model file (relative) -> a class bundle's weights with that checksum
    for name, part in parts.items():
        model_file = f"{MODELS_DIR}/{part.spec.sha256[:20]}.pt"
        sources.setdefault(model_file, part.directory / WEIGHTS_FILE)
        entry = part.spec.to_dict()
        entry["model_file"] = model_file
        manifest["class_specs"][name] = entry

    def fill(tmp: Path) -> None:
        (tmp / MODELS_DIR).mkdir()
        for model_file, src in sources.items():
            shutil.copyfile(src, tmp / model_file)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        load_bundle(tmp)  # never put an unloadable bundle in place

    return replace_dir_atomic(Path(out_dir), fill)


def is_bundle(directory: Path | str) -> bool:
    """Whether `directory` holds a kdsed bundle's manifest (so kdsed made it: `registry pull` may replace it)."""
    path = Path(directory) / MANIFEST_FILE
    try:
        if path.stat().st_size > MAX_BUNDLE_JSON_BYTES:
            return False
        return json.loads(path.read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_bundle(directory: Path | str) -> Bundle:
    """Read a bundle, verify its manifest and every checksum, and load its models (tensors only)."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    where = str(path)
    data = _read_json(path, BUNDLE_FORMAT)
    if data.get("classes") != list(CLASSES):
        raise BundleError(f"{where}: classes are {data.get('classes')!r}, expected {list(CLASSES)}")
    specs_data = _get(data, "class_specs", dict, where)
    if sorted(specs_data) != sorted(CLASSES):
        raise BundleError(f"{where}: class_specs has classes {sorted(specs_data)}, expected {sorted(CLASSES)}")
    feature_config, normalizer = _feature_config(data, where), _normalizer(data, where)
    classes = {name: _class_spec(_get(specs_data, name, dict, where), None, f"{where}: class_specs.{name}")
               for name in CLASSES}
    models: dict[str, nn.Module] = {}
    first_user: dict[str, ClassSpec] = {}
    for name, spec in classes.items():
        other = first_user.setdefault(spec.model_file, spec)
        if (other.model_config, other.sha256) != (spec.model_config, spec.sha256):
            raise BundleError(f"{where}: classes {other.class_name} and {name} share {spec.model_file} but "
                              "name different model configs or checksums for it")
        if spec.model_file not in models:
            models[spec.model_file] = _load_model(directory, spec, feature_config.n_mels)
    return Bundle(directory, feature_config, normalizer, classes, models)


def load_weights(path: Path | str, *, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """A dict of tensors from `path`, refusing anything else (never unpickles arbitrary objects, never inflates).

    `max_bytes`: the most the file may hold (its model's tensors plus headers); default: the largest model's.
    """
    path = Path(path)
    check_weights_archive(path, _MAX_WEIGHTS_BYTES if max_bytes is None else max_bytes)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: the error says enough
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code with UnpicklingError, torn files with others
        raise BundleError(f"{path}: refused by torch.load(weights_only=True): {_load_failure(e)}; expected a "
                          "dict of tensors written by kdsed") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise BundleError(f"{path}: expected a dict of str -> tensor, got {type(obj).__name__}")
    return obj


#: The largest weights file any model within the bounds can have.
_MAX_WEIGHTS_BYTES = 4 * MAX_MODEL_PARAMETERS + WEIGHTS_OVERHEAD_BYTES


def check_weights_archive(path: Path, max_bytes: int) -> None:
    """Refuse, from its size and zip headers alone, a weights file that is too big or would inflate when loaded."""
    size = _check_file_size(path, max_bytes, "its model's tensors and headers")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise BundleError(f"{path}: not a torch weights archive ({e}); expected a file written by torch.save") from None
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED or m.file_size != m.compress_size:
            raise BundleError(f"{path}: member {m.filename} is compressed ({m.compress_size:,} bytes that inflate to "
                              f"{m.file_size:,}); torch.save stores tensors uncompressed, so the file was made or "
                              "changed by something else; refused before inflating it")
        if m.filename.endswith("data.pkl") and m.file_size > MAX_WEIGHTS_INDEX_BYTES:
            raise BundleError(f"{path}: its tensor index {m.filename} has {m.file_size:,} bytes, more than "
                              f"{MAX_WEIGHTS_INDEX_BYTES:,} (see docs/limits.md)")
    if sum(m.file_size for m in members) > size:
        raise BundleError(f"{path}: its zip members declare {sum(m.file_size for m in members):,} bytes in a file of "
                          f"{size:,}; refused as crafted")


def _check_file_size(path: Path, max_bytes: int, what: str) -> int:
    try:
        size = path.stat().st_size
    except OSError:
        raise BundleError(f"{path}: weights file not found") from None
    if size > max_bytes:
        raise BundleError(f"{path}: {size:,} bytes, more than the {max_bytes:,} of {what} (see docs/limits.md); "
                          "refused unread")
    return size


def _load_failure(error: Exception) -> str:
    """What torch.load objected to, without its advice to load untrusted files unsafely."""
    noise = ("weights only load failed", "weights_only", "trusted source", "please file an issue",
             "check the documentation", "https://")
    for line in (x.strip() for x in str(error).splitlines()):
        if line and not any(n in line.lower() for n in noise):
            return line.removeprefix("WeightsUnpickler error: ").split(" Please")[0].split(" by default")[0] \
                .rstrip(".")[:200]
    return type(error).__name__


def _load_model(directory: Path, spec: ClassSpec, n_mels: int) -> nn.Module:
    from kdsed.models import build_model

    path = _inside(directory, spec.model_file)
    tensor_bytes = _model_bytes(spec.model_config, n_mels, str(directory / MANIFEST_FILE))
    _check_file_size(path, tensor_bytes + WEIGHTS_OVERHEAD_BYTES, f"{spec.model_config.name} model's tensors "
                     f"({tensor_bytes:,} bytes) and headers")
    _verify_checksum(path, spec.sha256, str(directory / MANIFEST_FILE))
    model = build_model(spec.model_config, n_mels)
    try:
        model.load_state_dict(load_weights(path, max_bytes=tensor_bytes + WEIGHTS_OVERHEAD_BYTES))
    except RuntimeError as e:
        raise BundleError(f"{path}: weights do not fit model config {to_dict(spec.model_config)}: "
                          f"{' '.join(line.strip() for line in str(e).splitlines()[:2])[:300]}") from None
    return model.eval()


def _model_bytes(cfg: ModelConfig, n_mels: int, where: str) -> int:
    """Bytes of the tensors of `cfg`'s model, counted on the meta device (nothing allocated); bounded."""
    from kdsed.models import build_model

    with torch.device("meta"):
        model = build_model(cfg, n_mels)
    state = model.state_dict()
    n = sum(t.numel() for t in state.values())
    if n > MAX_MODEL_PARAMETERS:
        raise BundleError(f"{where}: model config {to_dict(cfg)} has {n:,} parameters, more than "
                          f"{MAX_MODEL_PARAMETERS:,} (see docs/limits.md)")
    return sum(t.numel() * t.element_size() for t in state.values())


def _inside(directory: Path, relative: str) -> Path:
    path = (directory / relative).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise BundleError(f"{directory / MANIFEST_FILE}: model file {relative!r} points outside the bundle")
    return path


def _verify_checksum(path: Path, expected: str, where: str) -> None:
    if not path.is_file():
        raise BundleError(f"{path}: weights file not found (named in {where})")
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(f"{path}: sha256 mismatch: file has {actual}, {where} expects {expected}; "
                          "the bundle was modified or is incomplete")


def _read_json(path: Path, expected_format: str) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path}: not found; expected a {expected_format} description")
    if path.stat().st_size > MAX_BUNDLE_JSON_BYTES:
        raise BundleError(f"{path}: {path.stat().st_size:,} bytes, more than {MAX_BUNDLE_JSON_BYTES:,} "
                          "(see docs/limits.md); refused unread")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"{path}: not valid JSON ({str(e)[:200] or type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise BundleError(f"{path}: format is {data.get('format') if isinstance(data, dict) else None!r}, "
                          f"expected {expected_format!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {data.get('format_version')!r} is not supported "
                          f"(this kdsed reads version {FORMAT_VERSION})")
    return data


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise BundleError(f"{where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BundleError(f"{where}: {key} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def _class_spec(data: Mapping[str, Any], model_file: str | None, where: str) -> ClassSpec:
    name = _get(data, "class_name", str, where)
    if name not in CLASSES:
        raise BundleError(f"{where}: class_name {name!r} is not one of {', '.join(CLASSES)}")
    post = _get(data, "postprocess", dict, where)
    window = _get(post, "median_window", int, f"{where}: postprocess")
    sigma = float(_get(post, "gaussian_sigma", (int, float), f"{where}: postprocess"))
    threshold = float(_get(post, "threshold", (int, float), f"{where}: postprocess"))
    _check_postprocess(window, sigma, threshold, where)
    sha = _get(data, "sha256", str, where)
    if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
        raise BundleError(f"{where}: sha256 {sha!r} is not 64 lowercase hex digits")
    try:
        model_config = from_dict(ModelConfig, _get(data, "model_config", dict, where))
    except ConfigError as e:
        raise BundleError(f"{where}: model_config: {e}") from None
    return ClassSpec(name, model_file or _get(data, "model_file", str, where), model_config, window, sigma,
                     threshold, sha, dict(_get(data, "provenance", dict, where)))


#: Feature settings a bundle may ask for: kdsed.predict extracts them from every clip it is given.
MAX_N_MELS, MAX_N_FFT, MAX_FRAMES_PER_CLIP = 512, 1 << 16, 10_000


def _feature_config(data: Mapping[str, Any], where: str) -> FeatureConfig:
    try:
        fc = from_dict(FeatureConfig, _get(data, "feature_config", dict, where))
    except ConfigError as e:
        raise BundleError(f"{where}: feature_config: {e}") from None
    if not (fc.n_mels <= MAX_N_MELS and fc.n_fft <= MAX_N_FFT and fc.sample_rate <= MAX_SAMPLE_RATE_HZ
            and fc.frames_per_clip <= MAX_FRAMES_PER_CLIP and fc.clip_duration_s <= 60):
        raise BundleError(f"{where}: feature_config {to_dict(fc)} is beyond the bounds (n_mels <= {MAX_N_MELS}, "
                          f"n_fft <= {MAX_N_FFT}, sample_rate <= {MAX_SAMPLE_RATE_HZ}, <= {MAX_FRAMES_PER_CLIP} "
                          "frames per clip of <= 60 s; see docs/limits.md)")
    return fc


def _normalizer(data: Mapping[str, Any], where: str) -> Normalizer:
    d = _get(data, "normalizer", dict, where)
    try:
        norm = Normalizer.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{where}: normalizer must have numeric lists 'mean' and 'std' ({e})") from None
    n_mels = _feature_config(data, where).n_mels
    if norm.mean.shape != (n_mels,) or norm.std.shape != (n_mels,) or not np.all(norm.std > 0):
        raise BundleError(f"{where}: normalizer mean/std must have {n_mels} values (n_mels) with std > 0, got "
                          f"shapes {norm.mean.shape}/{norm.std.shape}")
    return norm


def _check_postprocess(window: int, sigma: float, threshold: float, where: str) -> None:
    if not (int(window) >= 1 and sigma >= 0 and 0 < threshold < 1):
        raise BundleError(f"{where}: post-processing window={window}, sigma={sigma}, threshold={threshold}; "
                          "expected window >= 1 frame, sigma >= 0 frames, 0 < threshold < 1")


def _jsonable(value: Any, key: str) -> Any:
    try:
        return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    except (TypeError, ValueError) as e:
        raise BundleError(f"{key}: not JSON-serialisable ({e})") from None


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


__all__ = [
    "BUNDLE_FORMAT", "Bundle", "BundleError", "CLASS_BUNDLE_FORMAT", "CLASS_FILE", "ClassBundle", "ClassSpec",
    "FORMAT_VERSION", "MANIFEST_FILE", "WEIGHTS_FILE", "assemble_bundle", "check_weights_archive", "is_bundle",
    "load_bundle", "load_weights", "read_class_bundle", "sha256_file", "write_class_bundle",
]
