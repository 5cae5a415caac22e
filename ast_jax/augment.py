"""The training recipe's augmentation, run on the device inside the jitted step.

The host sends fixed-length waveforms; `train_inputs` turns a batch of them into the model's input, as
AST's `src/dataloader.py` does for one clip at a time:

1. mixup (with probability `mixup` per clip): mean-centre both waveforms, mix them as
   lam * x1 + (1 - lam) * x2 with lam ~ Beta(mixup_alpha, mixup_alpha), centre the mix again, and mix the
   targets with the same weight;
2. Kaldi log-mel features (`ast_jax.features.fbank`), zero-padded or cut to `target_length` frames;
3. one frequency mask and one time mask (torchaudio FrequencyMasking/TimeMasking: width uniform in
   [0, freqm) or [0, timem), start uniform over the positions where the mask fits), filled with 0 before
   normalisation, so masked cells read -mean / (2 std) after it;
4. normalisation (x - mean) / (2 std);
5. noise (when `noise`): add U[0, 1) per cell times one U[0, 1) / 10 per clip;
6. roll (when `roll` > 0): shift the time axis circularly by an integer in [-roll, roll - 1].

Every clip draws its own random numbers, all from `rng`: the same rng gives the same inputs. Callers pass
`jax.random.fold_in(key, step)`, so a resumed run repeats the augmentation exactly.

One difference from the original: the mixup partner is a uniformly random row of the same batch, not a
uniformly random clip of the whole data set (which the device does not hold). For a shuffled batch both
are a uniformly random clip of the data set, so each pair has the same distribution; partners within one
batch are drawn from the same few clips, and a clip is its own partner with probability 1 / batch size
instead of 1 / data set size (then it is left as it is, as the original leaves it). A batch drawn by the
AudioSet recipe's balancing weights (`data.balanced`) gives partners drawn by those weights too, where the
original drew them uniformly (its dataloader notes that balanced partners did worse). Pass the batch's
`valid` mask so that padding rows of a last, partial batch are never partners.

Evaluation uses `ast_jax.features.input_values`, which equals `train_inputs` with every augmentation off.
`noise` and `roll` are separate switches here; the original applies both under its `noise` flag, so the
recipe sets noise=True with roll=10.

config.augment fields: mixup (0..1), mixup_alpha (10.0), freqm, timem (mask widths in bins / frames; 0 = off),
noise (bool), roll (int).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ast_jax import features as feature_ops
from ast_jax.features import FeatureConfig

# The recipe's fields and their "off" values; a config may omit any of them.
DEFAULTS = {"mixup": 0.0, "mixup_alpha": 10.0, "freqm": 0, "timem": 0, "noise": False, "roll": 0}


def settings(augment) -> dict:
    """The augment config as a plain dict with every field present (unknown fields are an error)."""
    values = dict(augment or {})
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown augment fields: {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    return {**DEFAULTS, **values}


def mixup(rng, audio, targets, probability: float, alpha: float, valid=None, num_samples=None):
    """Mix each clip with a random clip of the batch (with `probability`); returns audio, targets and lambdas.

    With `valid` (B,) bool, partners are drawn among the valid rows only, so a padded last batch mixes real
    clips with real clips. With `num_samples` (B,), each clip's true length: means are taken over it and the
    partner is cut or zero-padded to it, as the original pads or cuts the second waveform to the first's.
    """
    batch, samples = audio.shape
    choose, partner_key, lam_key = jax.random.split(rng, 3)
    if valid is None:
        partner = jax.random.randint(partner_key, (batch,), 0, batch)
    else:
        partner = jax.random.categorical(partner_key, jnp.where(valid, 0.0, -jnp.inf), shape=(batch,))
    lam = jax.random.beta(lam_key, alpha, alpha, (batch,))
    lam = jnp.where(jax.random.uniform(choose, (batch,)) < probability, lam, 1.0)
    lengths = jnp.full((batch,), samples) if num_samples is None else jnp.asarray(num_samples)
    inside = jnp.arange(samples)[None, :] < lengths[:, None]
    count = jnp.maximum(lengths, 1)[:, None]

    def centre(x):
        return jnp.where(inside, x - jnp.where(inside, x, 0.0).sum(axis=1, keepdims=True) / count, 0.0)

    centred = centre(audio)
    mixed = centre(lam[:, None] * centred + (1 - lam[:, None]) * centred[partner])
    return mixed, lam[:, None] * targets + (1 - lam[:, None]) * targets[partner], lam


def mask_along(rng, spectrogram, axis: int, max_width: int):
    """Zero one band of width uniform in [0, max_width) along `axis` (1: time, 2: frequency) of each clip.

    As torchaudio's mask_along_axis: value = U * max_width, start = floor(U' * (size - value)),
    masked [start, start + floor(value)).
    """
    batch, size = spectrogram.shape[0], spectrogram.shape[axis]
    width_key, start_key = jax.random.split(rng)
    value = jax.random.uniform(width_key, (batch,)) * max_width
    start = jnp.floor(jax.random.uniform(start_key, (batch,)) * (size - value))
    end = start + jnp.floor(value)
    position = jnp.arange(size)[None, :]
    masked = (position >= start[:, None]) & (position < end[:, None])  # (B, size)
    masked = masked[:, :, None] if axis == 1 else masked[:, None, :]
    return jnp.where(masked, 0.0, spectrogram)


def roll_time(rng, spectrogram, max_shift: int):
    """Shift each clip's frames circularly by an integer in [-max_shift, max_shift - 1] (as torch.roll)."""
    batch, frames = spectrogram.shape[:2]
    shift = jax.random.randint(rng, (batch,), -max_shift, max_shift)
    source = (jnp.arange(frames)[None, :] - shift[:, None]) % frames  # out[t] = in[t - shift]
    return jnp.take_along_axis(spectrogram, source[:, :, None], axis=1)


def train_inputs(rng, audio, targets, features: FeatureConfig, augment, valid=None, num_samples=None):
    """Training inputs `(B, target_length, num_mel_bins)` and (mixed) targets from waveforms `(B, samples)`.

    `valid` (B,) bool keeps padding rows out of the mixup partners. `num_samples` (B,), the clips' true
    lengths before zero padding (the batch's "length"), makes frames past each clip's end padding rows, as
    `input_values(..., num_samples)` does at evaluation.
    """
    options = settings(augment)
    mix_key, freq_key, time_key, noise_key, scale_key, roll_key = jax.random.split(rng, 6)
    audio = jnp.asarray(audio, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    if options["mixup"] > 0:
        audio, targets, _ = mixup(mix_key, audio, targets, options["mixup"], options["mixup_alpha"], valid,
                                  num_samples)
    num_frames = None if num_samples is None else feature_ops.frame_counts(num_samples, features)
    spectrogram = feature_ops.pad_or_truncate(feature_ops.fbank(audio, features), features.target_length, num_frames)
    if options["freqm"] > 0:
        spectrogram = mask_along(freq_key, spectrogram, 2, options["freqm"])
    if options["timem"] > 0:
        spectrogram = mask_along(time_key, spectrogram, 1, options["timem"])
    spectrogram = feature_ops.normalize(spectrogram, features)
    if options["noise"]:
        scale = jax.random.uniform(scale_key, (spectrogram.shape[0], 1, 1)) / 10
        spectrogram = spectrogram + jax.random.uniform(noise_key, spectrogram.shape) * scale
    if options["roll"] > 0:
        spectrogram = roll_time(roll_key, spectrogram, options["roll"])
    return spectrogram, targets
