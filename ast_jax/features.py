"""Kaldi-compatible log-mel filterbank features in JAX, and the settings the AST checkpoints were trained on.

The released AST checkpoints only work on the features they were trained on: torchaudio's
`compliance.kaldi.fbank` (Kaldi `compute-fbank-feats` with dither 0, a Hanning window and 128 mel bins),
padded or cut to a fixed number of frames and normalised with data set statistics. This module computes
exactly that as pure, jittable JAX over a batch of waveforms, so that features run on the same device as
the model and inside a jitted train or predict step:

    fbank(waveforms, config)               (B, samples) -> (B, frames, mel_bins), raw Kaldi log-mel
    pad_or_truncate(features, T)           zero rows appended at the end, or the first T frames kept
    normalize(features, config)            (x - mean) / (2 * std)
    input_values(waveforms, config)        the three together: what transformers' ASTFeatureExtractor gives
    fbank_stream(blocks, config)           fbank of a long recording, block by block in bounded memory

The pieces are separate so that a training step can apply SpecAugment masks between padding and
normalisation, where the recipe applies them (`ast_jax.augment`).

Per frame, as Kaldi: remove the frame's mean, pre-emphasise (the first sample against itself), window,
zero-pad to a power of two, |rfft|^2, mel filterbank (triangles in Kaldi's mel space, 1127 ln(1 + f/700)),
natural log floored at float32 epsilon. With the AST settings one low filter covers no FFT bin, so mel bin 3
is always ln(eps) = -15.942385: Kaldi, torchaudio and the checkpoints all have it, and so do we.

Precision: the frame-to-power-spectrum step runs in float64 by default (`spectrum_dtype`). In float32 any
implementation (torchaudio's included) loses the low-energy bins of loud narrow-band frames: a pure tone
near full scale differs from the float64 reference by about 3e-3 in log-mel, 3e-4 after normalisation (and
real speech by up to 1.5e-4). In float64 the features agree with transformers' float64 numpy extractor to
about 1e-6 in log-mel, on every signal tested.
The rest (mel matmul, log, normalisation) is float32 with HIGHEST matmul precision (GPUs would otherwise
use TF32). The FFT is `jnp.fft.rfft`: on CPU it is about twice as fast as the equivalent DFT matmul, and
equally accurate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import numbers
from typing import Any, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ast_jax._checks import is_positive_int

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
    window: str = "hanning"  # Kaldi window types: hanning, hamming, povey, rectangular, blackman, sine
    log_floor: float = FLOAT32_EPS
    mean: float = DATASET_STATS["audioset"][0]
    std: float = DATASET_STATS["audioset"][1]
    do_normalize: bool = True

    def __post_init__(self):
        def number(value):
            return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

        problems = [f"{name} must be a positive integer, got {getattr(self, name)!r}"
                    for name in ("sample_rate", "num_mel_bins", "target_length")
                    if not is_positive_int(getattr(self, name))]
        for name in ("frame_length_ms", "frame_shift_ms", "std", "log_floor"):
            if not (number(getattr(self, name)) and getattr(self, name) > 0):
                problems.append(f"{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("low_freq", "high_freq", "preemphasis", "mean"):
            if not number(getattr(self, name)):
                problems.append(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.window not in WINDOWS:
            problems.append(f"window must be one of Kaldi's {', '.join(WINDOWS)}, got {self.window!r}")
        if not problems and not (self.frame_length >= 2 and self.frame_shift >= 1):
            problems.append(f"frames of {self.frame_length_ms:g} ms every {self.frame_shift_ms:g} ms are shorter "
                            f"than {'two samples' if self.frame_shift >= 1 else 'a sample'} at {self.sample_rate} Hz")
        if not problems and not 0 <= self.preemphasis <= 1:
            problems.append(f"preemphasis must be in [0, 1], got {self.preemphasis}")
        if not problems:
            nyquist = self.sample_rate / 2
            high_freq = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
            if not 0 <= self.low_freq < high_freq <= nyquist:
                problems.append(f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist:g} Hz); got low_freq "
                                f"{self.low_freq:g}, high_freq {self.high_freq:g} (= {high_freq:g} Hz)")
        if problems:
            raise ValueError("invalid FeatureConfig: " + "; ".join(problems))
        casts = {"int": int, "float": float, "bool": bool}
        for field in dataclasses.fields(self):  # numpy scalars as Python ones: the config is written as JSON
            if field.type in casts:
                object.__setattr__(self, field.name, casts[field.type](getattr(self, field.name)))

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
        """Samples per frame (400 at 16 kHz): the product truncated, as Kaldi and torchaudio do (275 at 11,025 Hz)."""
        return int(self.sample_rate * self.frame_length_ms / 1000 + 1e-9)

    @property
    def frame_shift(self) -> int:
        """Samples between frame starts (160 at 16 kHz), truncated as the frame length is."""
        return int(self.sample_rate * self.frame_shift_ms / 1000 + 1e-9)

    @property
    def fft_length(self) -> int:
        """FFT size: the frame length rounded up to a power of two (Kaldi's round_to_power_of_two; 512)."""
        return 1 << (self.frame_length - 1).bit_length()

    @property
    def input_samples(self) -> int:
        """Samples whose frames fill the model's input exactly (`target_length` frames; 20,720 for 128 frames at
        16 kHz): audio beyond them is never heard."""
        return self.frame_length + (self.target_length - 1) * self.frame_shift

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

    def settings_hf_lacks(self) -> list[str]:
        """`name=value` of each setting away from its default that transformers' ASTFeatureExtractor has no
        option for (it always frames and filters as the defaults do)."""
        defaults = FeatureConfig()
        return [f"{name}={getattr(self, name)!r}" for name in _HF_FIXED
                if getattr(self, name) != getattr(defaults, name)]

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


# ----------------------------------------------------------------------------------------------------------
# Kaldi's window and mel filterbank: numpy float64, built once per setting.

# Settings ASTFeatureExtractor fixes at FeatureConfig's defaults.
_HF_FIXED = ("frame_length_ms", "frame_shift_ms", "low_freq", "high_freq", "preemphasis", "remove_dc_offset", "window",
             "log_floor")

# Kaldi's Blackman window coefficient (FrameExtractionOptions::blackman_coeff).
BLACKMAN_COEFF = 0.42
WINDOWS = ("hanning", "hamming", "povey", "rectangular", "blackman", "sine")


def kaldi_mel(frequency):
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(frequency, np.float64) / 700.0)


def window_function(config: FeatureConfig) -> np.ndarray:
    """Kaldi's analysis window of `config.window` over one frame, `(frame_length,)` float64.

    All are symmetric (Kaldi divides by N - 1): "hanning" is 0.5 - 0.5 cos(2 pi n / (N - 1)), numpy's
    `np.hanning`, which AST uses; "povey" is hanning ** 0.85, Kaldi's default.
    """
    length = config.frame_length
    phase = 2 * np.pi * np.arange(length) / (length - 1)
    hann = 0.5 - 0.5 * np.cos(phase)
    windows = {
        "hanning": lambda: hann,
        "hamming": lambda: 0.54 - 0.46 * np.cos(phase),
        "povey": lambda: hann ** 0.85,
        "rectangular": lambda: np.ones(length),
        "blackman": lambda: BLACKMAN_COEFF - 0.5 * np.cos(phase) + (0.5 - BLACKMAN_COEFF) * np.cos(2 * phase),
        "sine": lambda: np.sin(phase / 2),
    }
    return windows[config.window]()


def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """Kaldi's triangular mel filters over the FFT bins, `(fft_length // 2 + 1, num_mel_bins)` float64.

    Filter m rises linearly in mel from edge m to centre m + 1 and falls to edge m + 2, the num_mel_bins + 2
    edges evenly spaced in mel between low_freq and high_freq. Filters narrower than an FFT bin can hold no
    bin and stay zero (Kaldi's quirk, kept). The Nyquist bin, which Kaldi leaves out, gets weight 0.
    """
    high_freq = config.high_freq if config.high_freq > 0 else config.sample_rate / 2 + config.high_freq
    edges = np.linspace(kaldi_mel(config.low_freq), kaldi_mel(high_freq), config.num_mel_bins + 2)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    bin_mel = kaldi_mel(np.arange(config.fft_length // 2 + 1) * config.sample_rate / config.fft_length)[:, None]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


@functools.lru_cache(maxsize=32)
def _constants(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """(window float64, mel filterbank float32) for one setting (FeatureConfig has checked it)."""
    return window_function(config), mel_filterbank(config).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Features in JAX.

SPECTRUM_DTYPES = ("float64", "float32")


def frame_counts(num_samples, config: FeatureConfig) -> jax.Array:
    """`FeatureConfig.num_frames` for an array of lengths, inside jit: frames of each waveform."""
    num_samples = jnp.asarray(num_samples)
    whole = 1 + (num_samples - config.frame_length) // config.frame_shift
    return jnp.where(num_samples < config.frame_length, 0, whole)


def _frames(waveforms: jax.Array, config: FeatureConfig) -> jax.Array:
    """`(B, S)` -> `(B, num_frames(S), frame_length)`, frame t = samples [t * shift, t * shift + length).

    Built from shifted slices of the waveform cut into hop-sized chunks (frame t is chunks t, t+1, ... laid
    end to end, trimmed to the frame length): no gather. The few samples past the last whole frame are
    dropped or zero-filled; no kept frame reads them.
    """
    length, shift = config.frame_length, config.frame_shift
    num_frames = config.num_frames(waveforms.shape[-1])
    chunks_per_frame = -(-length // shift)
    samples = (num_frames + chunks_per_frame - 1) * shift
    waveforms = waveforms[:, :samples]
    waveforms = jnp.pad(waveforms, ((0, 0), (0, samples - waveforms.shape[-1])))
    chunks = waveforms.reshape(waveforms.shape[0], samples // shift, shift)
    frames = jnp.concatenate([chunks[:, j:j + num_frames] for j in range(chunks_per_frame)], axis=-1)
    return frames[..., :length]


def _power_spectrum(frames: jax.Array, config: FeatureConfig, spectrum_dtype: str) -> jax.Array:
    """Kaldi's per-frame steps, `(..., frame_length)` -> `(..., fft_length // 2 + 1)` float32 |rfft|^2:
    remove the mean, pre-emphasise, window, zero-pad, FFT; computed in `spectrum_dtype`."""
    window, _ = _constants(config)
    # float64 needs 64-bit types for this step only; `_float64_power_spectrum` keeps them under transformations
    with jax.enable_x64(True) if spectrum_dtype == "float64" else contextlib.nullcontext():
        frames = frames.astype(spectrum_dtype)
        if config.remove_dc_offset:
            frames = frames - frames.mean(axis=-1, keepdims=True)
        if config.preemphasis:
            first = frames[..., :1] * (1 - config.preemphasis)
            frames = jnp.concatenate([first, frames[..., 1:] - config.preemphasis * frames[..., :-1]], axis=-1)
        spectrum = jnp.fft.rfft(frames * jnp.asarray(window, spectrum_dtype), n=config.fft_length)
        return (spectrum.real ** 2 + spectrum.imag ** 2).astype(jnp.float32)


@functools.lru_cache(maxsize=32)
def _float64_power_spectrum(config: FeatureConfig):
    """`_power_spectrum` in float64 that stays float64 under vmap and differentiates.

    The float64 types exist only while `jax.enable_x64` is on, that is while `_power_spectrum` is traced. A
    transformation applied later to a traced function (vmap of a jitted step, the JVP of one) would
    re-run its primitives with 64-bit types off: vmap silently drops to float32, grad fails. So batching
    calls `_power_spectrum` again on the batched frames (it works on any leading dimensions), and
    derivatives come from the float32 computation, which has the same derivative up to rounding.
    """
    def compute(frames):
        return _power_spectrum(frames, config, "float64")

    batchable = jax.custom_batching.custom_vmap(compute)

    @batchable.def_vmap
    def _batched(axis_size, in_batched, frames):
        return compute(frames), True

    spectrum = jax.custom_jvp(batchable)

    @spectrum.defjvp
    def _jvp(primals, tangents):
        _, tangent = jax.jvp(functools.partial(_power_spectrum, config=config, spectrum_dtype="float32"),
                             primals, tangents)
        return batchable(*primals), tangent

    return spectrum


# An eager call on a CPU computes a batch of more than GROUP_ABOVE clips GROUP clips at a time (`_in_groups`). On
# the 2-core development machine (32 MB of L3 cache) the whole batch ran as fast up to 32 clips and fell to a
# quarter of the speed from about 48; groups of 16 ran 5-10% faster than groups of 8 or 32.
GROUP, GROUP_ABOVE = 16, 32


def _in_groups(waveforms, config: FeatureConfig, num_samples=None) -> bool:
    """Whether an eager call on `waveforms` runs in groups of GROUP clips: a concrete batch of more than
    GROUP_ABOVE clips with at least one frame each, on one CPU device (`num_samples`, if any, one length or one
    a clip).

    A CPU computes a big batch faster in groups: the float64 frames and spectra of a group (about 1.5 MB a clip)
    stay in cache, where the whole batch's would not (bench/bench_features.py). Traced waveforms (under jit,
    vmap or grad) are computed whole, so that a caller's sharding of the batch axis is never looped over; on
    accelerators, which want the whole batch, too.
    """
    if isinstance(waveforms, jax.core.Tracer):
        return False
    shape = np.shape(waveforms)
    if len(shape) < 2 or math.prod(shape[:-1]) <= GROUP_ABOVE or config.num_frames(shape[-1]) == 0:
        return False
    if num_samples is not None and np.shape(num_samples) not in ((), shape[:-1]):
        return False
    if isinstance(waveforms, jax.Array):
        devices = waveforms.devices()
        return len(devices) == 1 and next(iter(devices)).platform == "cpu"
    return jax.default_backend() == "cpu"


@functools.partial(jax.jit, static_argnames=("function", "config", "spectrum_dtype"))
def _grouped(function, waveforms, num_samples, config, spectrum_dtype):
    """`function(waveforms, config, [num_samples], spectrum_dtype=...)` computed GROUP clips at a time."""
    leading, samples = waveforms.shape[:-1], waveforms.shape[-1]
    flat = jnp.reshape(waveforms, (-1, samples))
    if num_samples is None:
        out = jax.lax.map(lambda clip: function(clip, config, spectrum_dtype=spectrum_dtype), flat, batch_size=GROUP)
    else:
        lengths = jnp.broadcast_to(jnp.asarray(num_samples), leading).reshape(-1)
        out = jax.lax.map(lambda pair: function(pair[0], config, pair[1], spectrum_dtype=spectrum_dtype),
                          (flat, lengths), batch_size=GROUP)
    return out.reshape(*leading, *out.shape[1:])


def fbank(waveforms: jax.Array, config: FeatureConfig = FeatureConfig(), *,
          spectrum_dtype: str = "float64") -> jax.Array:
    """Kaldi log-mel filterbank of float waveforms `(..., samples)` in [-1, 1]: `(..., frames, num_mel_bins)`.

    frames = `config.num_frames(samples)` (whole frames only, Kaldi's snip_edges); a waveform shorter
    than one frame (400 samples at 16 kHz) has none, and `pad_or_truncate` then gives all padding rows.
    Output float32. Jittable with `config` static; NaN or Inf samples give non-finite features (the audio
    loader refuses them). `spectrum_dtype`: see the module docstring. Called eagerly on a CPU, a batch of more
    than 32 clips is computed 16 at a time, for speed (the same values).
    """
    if _in_groups(waveforms, config):
        return _grouped(_fbank, waveforms, None, config, spectrum_dtype)
    return _fbank(waveforms, config, spectrum_dtype=spectrum_dtype)


@functools.partial(jax.jit, static_argnames=("config", "spectrum_dtype"))
def _fbank(waveforms: jax.Array, config: FeatureConfig = FeatureConfig(), *,
           spectrum_dtype: str = "float64") -> jax.Array:
    """`fbank`, computed whole."""
    if not jnp.issubdtype(waveforms.dtype, jnp.floating):
        raise TypeError(f"fbank takes float waveforms in [-1, 1], got {waveforms.dtype}; scale integer PCM first")
    if spectrum_dtype not in SPECTRUM_DTYPES:
        raise ValueError(f"spectrum_dtype must be one of {SPECTRUM_DTYPES}, got {spectrum_dtype!r}")
    _, mel = _constants(config)
    leading, samples = waveforms.shape[:-1], waveforms.shape[-1]
    frames = _frames(waveforms.reshape(math.prod(leading), samples).astype(jnp.float32), config)  # (B, F, L)
    if spectrum_dtype == "float64":
        power = _float64_power_spectrum(config)(frames)
    else:
        power = _power_spectrum(frames, config, spectrum_dtype)
    energies = jnp.matmul(power, mel, precision=jax.lax.Precision.HIGHEST)  # (B, F, num_mel_bins)
    features = jnp.log(jnp.maximum(energies, config.log_floor))
    return features.reshape(*leading, *features.shape[-2:])


def pad_or_truncate(features: jax.Array, target_length: int, num_frames=None) -> jax.Array:
    """`(..., F, bins)` -> `(..., target_length, bins)`: zero rows appended at the end, or the first frames kept.

    `num_frames` (one count per waveform, e.g. `frame_counts(lengths)` for a batch zero-padded to a common
    length) also zeroes every row from that count on, so each row equals its clip padded on its own.
    """
    present = features.shape[-2]
    if present >= target_length:
        features = features[..., :target_length, :]
    else:
        padding = [(0, 0)] * (features.ndim - 2) + [(0, target_length - present), (0, 0)]
        features = jnp.pad(features, padding)
    if num_frames is not None:
        keep = jnp.arange(target_length) < jnp.asarray(num_frames)[..., None]
        features = jnp.where(keep[..., None], features, 0.0)
    return features


def normalize(features: jax.Array, config: FeatureConfig) -> jax.Array:
    """(x - mean) / (2 * std) with the config's data set statistics, when `config.do_normalize`."""
    if not config.do_normalize:
        return features
    return (features - config.mean) / (2 * config.std)


def input_values(waveforms: jax.Array, config: FeatureConfig = FeatureConfig(), num_samples=None, *,
                 spectrum_dtype: str = "float64") -> jax.Array:
    """The model's input `(..., target_length, num_mel_bins)` from waveforms `(..., samples)`.

    Equals transformers' ASTFeatureExtractor (same settings) applied to each waveform. For a batch of
    clips zero-padded to one length, pass their true lengths as `num_samples`: frames past each clip's end
    become padding rows, as if each clip were extracted alone. Jittable with `config` static.

    Called eagerly on a CPU, a batch of more than 32 clips is computed 16 at a time (`jax.lax.map`), which keeps
    the float64 intermediates (about 1.5 MB a clip) in cache: the same values, 4.4x as fast at batch 256
    on the 2-core development machine (bench/bench_features.py). Traced waveforms (under jit, as in a train or
    predict step, vmap or grad) are computed whole, so that a sharded batch axis is never looped over; on CPU,
    jit over groups yourself, `jax.lax.map(lambda w: input_values(w, config), waveforms, batch_size=16)`, for the
    same gain.
    """
    if _in_groups(waveforms, config, num_samples):
        return _grouped(_input_values, waveforms, num_samples, config, spectrum_dtype)
    return _input_values(waveforms, config, num_samples, spectrum_dtype=spectrum_dtype)


@functools.partial(jax.jit, static_argnames=("config", "spectrum_dtype"))
def _input_values(waveforms: jax.Array, config: FeatureConfig = FeatureConfig(), num_samples=None, *,
                  spectrum_dtype: str = "float64") -> jax.Array:
    """`input_values`, computed whole."""
    features = _fbank(waveforms, config, spectrum_dtype=spectrum_dtype)
    num_frames = None if num_samples is None else frame_counts(num_samples, config)
    return normalize(pad_or_truncate(features, config.target_length, num_frames), config)


def fbank_stream(blocks: Iterable[np.ndarray], config: FeatureConfig = FeatureConfig(), *,
                 block_frames: int = 1000, spectrum_dtype: str = "float64") -> Iterator[jax.Array]:
    """`fbank` of a long waveform given as consecutive 1-D sample blocks of any sizes, in bounded memory.

    Yields `(frames, num_mel_bins)` arrays, `block_frames` frames each but the last; laid end to end they
    are `fbank` of the whole waveform. Memory holds one block of samples and frames, however long the
    recording (`ast_jax.audio.stream_audio` reads files that way). Every block is computed at the same shape,
    so this compiles once.
    """
    length, shift = config.frame_length, config.frame_shift
    block_samples = (block_frames - 1) * shift + length  # samples under block_frames frames
    pending = np.zeros(0, np.float32)
    for block in blocks:
        pending = np.concatenate([pending, np.asarray(block, np.float32).reshape(-1)])
        while len(pending) >= block_samples:
            yield fbank(pending[None, :block_samples], config, spectrum_dtype=spectrum_dtype)[0]
            pending = pending[block_frames * shift:]  # the next frame starts here
    remaining = config.num_frames(len(pending))
    if remaining:
        tail = np.pad(pending, (0, block_samples - len(pending)))[None]
        yield fbank(tail, config, spectrum_dtype=spectrum_dtype)[0, :remaining]
