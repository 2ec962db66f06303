"""Bounds on untrusted input and on the sizes a run may ask for: defined once, stated in docs/limits.md.

Untrusted input (a bundle from elsewhere, a YAML file, metadata, audio) is checked against these
bounds before it is parsed or loaded, so that a crafted file is refused in bounded time and memory
instead of being inflated first. The sweep's size bounds catch typos such as `--passes 100000`;
`--allow-large` lifts them.
"""

from __future__ import annotations

from typing import Any, Mapping

MIB = 1 << 20

# ---- configuration files ------------------------------------------------------------------------------

#: A sweep YAML larger than this is refused before it is parsed (the shipped ones are under 2 KB).
MAX_CONFIG_BYTES = 1 * MIB
#: Nodes of a YAML document once its aliases are expanded (the shipped configs have about 100).
#: Bounds every later walk of the document: nested aliases ("billion laughs") are refused at this count.
MAX_CONFIG_NODES = 10_000
#: Nesting of mappings and lists (the shipped configs nest three deep).
MAX_CONFIG_DEPTH = 20

# ---- bundles ------------------------------------------------------------------------------------------

#: manifest.json / class.json (a normaliser of 64 values, post-processing, provenance: a few KB).
MAX_BUNDLE_JSON_BYTES = 4 * MIB
#: Parameters of one model a bundle may name (the full-width deep model has 333,330; width 4: 5.3 M).
MAX_MODEL_PARAMETERS = 50_000_000
#: The pickled index of a weights file (`data.pkl`: a few hundred bytes per tensor).
MAX_WEIGHTS_INDEX_BYTES = 1 * MIB
#: Bytes a weights file may hold beyond its model's tensors (zip headers, the index, alignment padding).
WEIGHTS_OVERHEAD_BYTES = 2 * MIB

# ---- metadata and audio -------------------------------------------------------------------------------

#: A metadata or event TSV (the largest DCASE 2018 / DESED list, unlabel_in_domain, is about 0.6 MB).
MAX_METADATA_BYTES = 64 * MIB
#: Audio headers: more channels or a higher rate is refused before any sample is read
#: (10 s at these bounds is 10 x 192,000 x 8 x 4 bytes = 61 MB of float32 samples).
MAX_AUDIO_CHANNELS = 8
MAX_SAMPLE_RATE_HZ = 192_000

# ---- sizes a sweep may ask for (lifted by --allow-large) ----------------------------------------------

#: config key -> largest value accepted without --allow-large (the report ran 4 passes of 30 epochs).
SWEEP_SIZE_BOUNDS: Mapping[str, float] = {
    "distill.passes": 20,
    "seeds": 20,
    "tagging_train.epochs": 500,
    "train.epochs": 500,
    "deep.width": 4.0,
    "shallow.width": 4.0,
    "baseline.width": 4.0,
    "ray.workers_per_variant": 64,
    "ray.tune_trials_per_variant": 64,
    "ray.max_failures": 20,
}
#: A sweep estimated to run longer than this prints its estimate before it starts.
ESTIMATE_ABOVE_S = 3600.0



def lookup(data: Mapping[str, Any], dotted: str) -> Any:
    """`data["a"]["b"]` for "a.b" (None where a part is missing)."""
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


__all__ = [
    "ESTIMATE_ABOVE_S", "MAX_AUDIO_CHANNELS", "MAX_BUNDLE_JSON_BYTES", "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "MAX_CONFIG_NODES",
    "MAX_METADATA_BYTES", "MAX_MODEL_PARAMETERS", "MAX_SAMPLE_RATE_HZ", "MAX_WEIGHTS_INDEX_BYTES", "MIB",
    "SWEEP_SIZE_BOUNDS", "WEIGHTS_OVERHEAD_BYTES", "lookup",
]
