"""Data: the DCASE 2018 Task 4 layout reader, audio loading and the built-in synthetic set."""

from kdsed.data.audio import AudioError, AudioNote, load_audio
from kdsed.data.layout import (
    LAYOUTS, Clip, DcaseDataset, MissingAudioError, expected_metadata, load_dataset, read_clip_list, read_weak_csv,
    write_clip_list, write_weak_csv,
)

__all__ = [
    "AudioError", "AudioNote", "Clip", "DcaseDataset", "LAYOUTS", "MissingAudioError", "PRESETS", "expected_metadata", "generate",
    "load_audio", "load_dataset", "read_clip_list", "read_weak_csv", "write_clip_list", "write_weak_csv",
]


def __getattr__(name: str):
    # `generate` pulls in scipy and the sound families: import it only when asked for.
    if name in ("generate", "PRESETS"):
        from kdsed.data import synth

        return getattr(synth, name)
    raise AttributeError(f"module 'kdsed.data' has no attribute {name!r}")
