"""Kaldi-compatible log-mel filterbank features in JAX, and the settings the AST checkpoints were trained on."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

# Kaldi's log floor: float32 machine epsilon.
FLOAT32_EPS = float(np.finfo(np.float32).eps)

# Dataset statistics of the log-mel features (mean, std) used by the original recipes.
DATASET_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),
    "speech_commands": (-6.845978, 5.5654526),
    "esc50": (-6.6268077, 5.358466),
}


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How a waveform becomes the model's `input_values`.

    Defaults are the AudioSet recipe: 16 kHz audio, 25 ms Hann frames every 10 ms, 128 Kaldi mel bins
    between 20 Hz and Nyquist, 1024 frames, normalised as (x - mean) / (2 * std).
    """

    sample_rate: int = 16000
    num_mel_bins: int = 128
    target_length: int = 1024  # frames after padding with zero rows or truncation
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    low_freq: float = 20.0
    high_freq: float = 0.0  # Kaldi convention: <= 0 means Nyquist + high_freq
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window: str = "hanning"  # Kaldi window types: hanning, hamming, povey, rectangular, blackman
    log_floor: float = FLOAT32_EPS
    mean: float = DATASET_STATS["audioset"][0]
    std: float = DATASET_STATS["audioset"][1]
    do_normalize: bool = True

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> "FeatureConfig":
        """Settings of a recipe: "audioset" (1024 frames), "speech_commands" (128) or "esc50" (512)."""
        lengths = {"audioset": 1024, "speech_commands": 128, "esc50": 512}
        if dataset not in DATASET_STATS:
            raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASET_STATS)}")
        mean, std = DATASET_STATS[dataset]
        return cls(**{"mean": mean, "std": std, "target_length": lengths[dataset], **overrides})

    @property
    def frame_length(self) -> int:
        """Samples per frame (400 at 16 kHz)."""
        return int(round(self.sample_rate * self.frame_length_ms / 1000))

    @property
    def frame_shift(self) -> int:
        """Samples between frame starts (160 at 16 kHz)."""
        return int(round(self.sample_rate * self.frame_shift_ms / 1000))

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi produces for a waveform of `num_samples` (snip_edges: whole frames only)."""
        if num_samples < self.frame_length:
            return 0
        return 1 + (num_samples - self.frame_length) // self.frame_shift

    def replace(self, **changes: Any) -> "FeatureConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FeatureConfig fields: {', '.join(unknown)}")
        return cls(**dict(values))

    def to_hf_preprocessor_config(self) -> dict[str, Any]:
        """The `preprocessor_config.json` of transformers' ASTFeatureExtractor for these settings."""
        return {
            "feature_extractor_type": "ASTFeatureExtractor",
            "feature_size": 1,
            "num_mel_bins": self.num_mel_bins,
            "max_length": self.target_length,
            "sampling_rate": self.sample_rate,
            "padding_side": "right",
            "padding_value": 0.0,
            "do_normalize": self.do_normalize,
            "mean": self.mean,
            "std": self.std,
            "return_attention_mask": False,
        }

    @classmethod
    def from_hf_preprocessor_config(cls, values: Mapping[str, Any]) -> "FeatureConfig":
        """Settings from a transformers `preprocessor_config.json` (the rest are fixed by ASTFeatureExtractor)."""
        defaults = cls()
        return cls(
            sample_rate=int(values.get("sampling_rate", defaults.sample_rate)),
            num_mel_bins=int(values.get("num_mel_bins", defaults.num_mel_bins)),
            target_length=int(values.get("max_length", defaults.target_length)),
            mean=float(values.get("mean", defaults.mean)),
            std=float(values.get("std", defaults.std)),
            do_normalize=bool(values.get("do_normalize", defaults.do_normalize)),
        )
