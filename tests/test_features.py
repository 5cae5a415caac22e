"""Kaldi filterbank features in JAX against independent references: transformers' ASTFeatureExtractor (its
numpy path, float64), transformers' spectrogram functions for the non-AST options, and kaldi-native-fbank."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from ast_jax import features
from ast_jax.features import FeatureConfig, fbank, fbank_stream, frame_counts, input_values, normalize, pad_or_truncate

CLIPS = Path(__file__).parent / "data" / "speech_clips"
RATE = 16000
LOG_EPS = float(np.log(np.float32(features.FLOAT32_EPS)))  # -15.942385
SC = FeatureConfig.for_dataset("speech_commands")
AUDIOSET = FeatureConfig.for_dataset("audioset")


def speech_clips() -> list[np.ndarray]:
    return [sf.read(path, dtype="float32")[0] for path in sorted(CLIPS.glob("*.wav"))]


def synthetic(seconds: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Signals that stress the float precision: narrow-band loud tones, DC, clipping, silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    signals = {
        "noise": 0.1 * rng.standard_normal(len(t)),
        "loud tone": 0.99 * np.sin(2 * np.pi * 1000.3 * t),
        "tone": 0.5 * np.sin(2 * np.pi * 440 * t),
        "quiet tone": 1e-3 * np.sin(2 * np.pi * 3000 * t),
        "silence": np.zeros(len(t)),
        "clipped": np.clip(3 * np.sin(2 * np.pi * 220 * t) + 0.2 * rng.standard_normal(len(t)), -1, 1),
        "dc offset": 0.5 + 1e-3 * rng.standard_normal(len(t)),
    }
    return {name: signal.astype(np.float32) for name, signal in signals.items()}


@functools.lru_cache(maxsize=None)
def extractor(config: FeatureConfig):
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "At least one mel filter has all zero values": the Kaldi quirk
        return transformers.ASTFeatureExtractor(**config.to_hf_preprocessor_config())


def reference_input_values(waveforms: list[np.ndarray], config: FeatureConfig) -> np.ndarray:
    out = extractor(config)(list(waveforms), sampling_rate=config.sample_rate, return_tensors="np")
    return np.asarray(out["input_values"])


def max_difference(waveforms: list[np.ndarray], config: FeatureConfig, **kwargs) -> float:
    ours = np.asarray(input_values(np.stack(waveforms), config, **kwargs))
    return float(np.abs(ours - reference_input_values(waveforms, config)).max())


def test_the_extractor_takes_its_numpy_path():
    """torchaudio is not installed, so ASTFeatureExtractor computes in numpy (the path our parity is against)."""
    from transformers.utils import is_speech_available

    assert not is_speech_available(), "torchaudio is installed: the parity tests would compare with it instead"
    assert extractor(SC).mel_filters.shape == (257, 128)


# ----------------------------------------------------------------------------------------------------------
# The pieces

def test_window_and_mel_filterbank_equal_transformers():
    from transformers.audio_utils import mel_filter_bank, window_function

    np.testing.assert_allclose(features.window_function(AUDIOSET), window_function(400, "hann", periodic=False),
                               atol=1e-15)
    with pytest.warns(UserWarning, match="all zero values"):  # the same empty filter (see the quirk test)
        reference = mel_filter_bank(num_frequency_bins=257, num_mel_filters=128, min_frequency=20,
                                    max_frequency=8000, sampling_rate=16000, norm=None, mel_scale="kaldi",
                                    triangularize_in_mel_space=True)
    np.testing.assert_allclose(features.mel_filterbank(AUDIOSET), reference, atol=1e-12)


def test_windows_equal_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank")
    for window in features.WINDOWS:
        options = knf.FrameExtractionOptions()
        options.window_type = window
        np.testing.assert_allclose(features.window_function(AUDIOSET.replace(window=window)),
                                   np.asarray(knf.FeatureWindowFunction(options).window), atol=1e-7, err_msg=window)


def test_zero_filter_quirk_is_kept():
    """With 128 bins from 20 Hz, filter 3 lies between two FFT bins: always ln(eps), as in Kaldi."""
    filters = features.mel_filterbank(AUDIOSET)
    assert np.flatnonzero(filters.max(axis=0) == 0).tolist() == [3]
    assert features.mel_filterbank(AUDIOSET.replace(num_mel_bins=80)).max(axis=0).min() > 0
    out = np.asarray(fbank(np.stack(speech_clips()), AUDIOSET))
    assert np.all(out[..., 3] == np.float32(LOG_EPS))
    assert LOG_EPS == pytest.approx(-15.942385)


def test_frame_counts():
    assert (SC.num_frames(16000), SC.num_frames(160000), SC.num_frames(399), SC.num_frames(400)) == (98, 998, 0, 1)
    lengths = np.array([0, 1, 399, 400, 401, 559, 560, 16000, 160000])
    assert frame_counts(lengths, SC).tolist() == [SC.num_frames(n) for n in lengths]
    for samples in (0, 399, 400, 560, 16000):
        assert fbank(np.zeros((2, samples), np.float32), SC).shape == (2, SC.num_frames(samples), 128)


def test_pad_or_truncate_and_normalize():
    x = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3) + 1
    padded = pad_or_truncate(x, 7)
    np.testing.assert_array_equal(padded[:, :5], x)
    np.testing.assert_array_equal(padded[:, 5:], 0)
    np.testing.assert_array_equal(pad_or_truncate(x, 4), x[:, :4])
    masked = pad_or_truncate(x, 7, num_frames=jnp.array([2, 6]))
    np.testing.assert_array_equal(masked[0, 2:], 0)
    np.testing.assert_array_equal(masked[1, :5], x[1])
    np.testing.assert_allclose(normalize(x, SC), (x - SC.mean) / (2 * SC.std), rtol=1e-6)
    np.testing.assert_array_equal(normalize(x, SC.replace(do_normalize=False)), x)


# ----------------------------------------------------------------------------------------------------------
# Parity with ASTFeatureExtractor: normalised features within 1e-5 (measured: 1.2e-7 to 2.4e-7, the float32
# rounding of the last steps; the README promises 1e-4)

PARITY = 1e-5


@pytest.mark.parametrize("config", [SC, AUDIOSET], ids=["speech_commands_128", "audioset_1024"])
def test_real_speech_equals_the_extractor(config):
    assert max_difference(speech_clips(), config) <= PARITY


@pytest.mark.parametrize("config", [SC, AUDIOSET], ids=["speech_commands_128", "audioset_1024"])
def test_synthetic_signals_equal_the_extractor(config):
    for name, signal in synthetic().items():
        assert max_difference([signal], config) <= PARITY, name


def test_ten_seconds_equal_the_extractor():
    speech = np.concatenate(speech_clips() * 2)  # 10 s of real speech
    signals = synthetic(10.0, seed=1)
    mixture = signals["noise"] + signals["tone"]
    for config in (AUDIOSET, SC):  # 998 frames padded to 1024, or cut to 128
        assert max_difference([speech, mixture], config) <= PARITY


def test_other_lengths_equal_the_extractor():
    clip = speech_clips()[2]
    for samples in (16000 - 1, 12345, 560, 400):
        assert max_difference([clip[:samples]], SC) <= PARITY, samples
    long = np.concatenate([clip] * 3)[:40007]
    assert max_difference([long], SC) <= PARITY


def test_float32_spectrum_is_close_but_not_exact():
    """The cheaper float32 spectrum: fine on speech, 3e-4 off on loud pure tones (why float64 is the default)."""
    speech = max_difference(speech_clips(), SC, spectrum_dtype="float32")
    tones = max_difference([synthetic()["loud tone"]], SC, spectrum_dtype="float32")
    assert speech <= 3e-4 and tones <= 1e-3
    assert tones > 1e-4  # if float32 ever matched here, the float64 default would no longer be needed


def test_padded_batch_with_lengths_equals_each_clip_alone():
    clips = speech_clips()
    cut = [clips[0], clips[1][:9000], clips[2][:399], clips[3][:401]]
    batch = np.stack([np.pad(c, (0, RATE - len(c))) for c in cut])
    ours = np.asarray(input_values(batch, SC, np.array([len(c) for c in cut])))
    reference = np.stack([reference_input_values([c], SC)[0] for c in cut])
    assert np.abs(ours - reference).max() <= PARITY


# ----------------------------------------------------------------------------------------------------------
# Other options against transformers' generic spectrogram, and the 80-bin setting against kaldi-native-fbank

@pytest.mark.parametrize("config,hf_window", [
    (FeatureConfig(window="hamming", frame_length_ms=20, frame_shift_ms=15, num_mel_bins=64, low_freq=60,
                   high_freq=-400, preemphasis=0.0, remove_dc_offset=False, log_floor=1e-10), "hamming"),
    (FeatureConfig(sample_rate=8000, window="povey", num_mel_bins=40, preemphasis=0.9), "povey"),
    (FeatureConfig(window="rectangular", frame_length_ms=32, frame_shift_ms=40, num_mel_bins=23), "boxcar"),
], ids=["hamming_20ms_no_dc_no_preemphasis", "povey_8khz", "rectangular_shift_over_length"])
def test_options_equal_transformers_spectrogram(config, hf_window):
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    high = config.high_freq if config.high_freq > 0 else config.sample_rate / 2 + config.high_freq
    filters = mel_filter_bank(num_frequency_bins=config.fft_length // 2 + 1, num_mel_filters=config.num_mel_bins,
                              min_frequency=config.low_freq, max_frequency=high, sampling_rate=config.sample_rate,
                              mel_scale="kaldi", triangularize_in_mel_space=True)
    waveform = np.concatenate(speech_clips()[:2])[:int(1.3 * config.sample_rate)]
    reference = spectrogram(waveform, window_function(config.frame_length, hf_window, periodic=False),
                            frame_length=config.frame_length, hop_length=config.frame_shift,
                            fft_length=config.fft_length, power=2.0, center=False,
                            preemphasis=config.preemphasis or None, mel_filters=filters, log_mel="log",
                            mel_floor=config.log_floor, remove_dc_offset=config.remove_dc_offset).T
    ours = np.asarray(fbank(waveform[None], config))[0]
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-4


def kaldi_native_fbank(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    knf = pytest.importorskip("kaldi_native_fbank")
    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.window_type = config.window
    options.frame_opts.samp_freq = config.sample_rate
    options.mel_opts.num_bins = config.num_mel_bins
    options.mel_opts.low_freq = config.low_freq
    options.mel_opts.high_freq = config.high_freq
    computer = knf.OnlineFbank(options)
    computer.accept_waveform(config.sample_rate, waveform.tolist())
    computer.input_finished()
    return np.stack([computer.get_frame(i) for i in range(computer.num_frames_ready)])


@pytest.mark.parametrize("rate", [11025, 22050, 8000])
def test_frame_sizes_truncate_as_kaldi_does(rate):
    """At 11,025 Hz 25 ms is 275.6 samples: Kaldi (and torchaudio) take 275, and so must the frames here."""
    config = FeatureConfig(sample_rate=rate, num_mel_bins=40, target_length=200)
    waveform = np.concatenate(speech_clips()[:2])[:rate]
    reference = kaldi_native_fbank(waveform, config)
    ours = np.asarray(fbank(waveform[None], config))[0]
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 2e-3  # kaldi-native-fbank's float32 arithmetic


def test_80_bins_equal_kaldi_native_fbank():
    """kaldi-native-fbank refuses 128 bins with a 512-point FFT (the empty filter), so compare at 80."""
    config = AUDIOSET.replace(num_mel_bins=80)
    signals = {**dict(enumerate(speech_clips())), **synthetic()}
    # kaldi-native-fbank computes in float32: on a loud pure tone and on a small signal over a large DC offset
    # its own rounding reaches 3.6e-3 and 3.8e-3 (we agree with the float64 extractor to 1e-6 on both, see
    # test_synthetic_signals_equal_the_extractor)
    float32_limited = {"loud tone", "dc offset"}
    for name, signal in signals.items():
        difference = np.abs(np.asarray(fbank(signal[None], config))[0] - kaldi_native_fbank(signal, config)).max()
        assert difference <= (5e-3 if name in float32_limited else 1e-3), name


# ----------------------------------------------------------------------------------------------------------
# Edge cases

def test_all_zero_audio():
    out = np.asarray(fbank(np.zeros((1, RATE), np.float32), SC))
    assert np.all(out == np.float32(LOG_EPS))
    values = np.asarray(input_values(np.zeros((1, RATE), np.float32), SC))[0]
    np.testing.assert_allclose(values[:98], (LOG_EPS - SC.mean) / (2 * SC.std), rtol=1e-6)
    np.testing.assert_allclose(values[98:], -SC.mean / (2 * SC.std), rtol=1e-6)


def test_shorter_than_one_frame_is_all_padding():
    """Fewer than 400 samples have no frames: the input is all padding rows, as the extractor gives."""
    clip = speech_clips()[0]
    for samples in (0, 1, 399):
        assert fbank(clip[None, :samples], SC).shape == (1, 0, 128)
        np.testing.assert_allclose(input_values(clip[None, :samples], SC), -SC.mean / (2 * SC.std), rtol=1e-6)
    for samples in (240, 399):  # the extractor raises below 240 samples (a negative frame count)
        assert max_difference([clip[:samples]], SC) == 0.0


def test_non_finite_samples_give_non_finite_features():
    """fbank does no host check inside jit; load_audio refuses NaN/Inf (tests/test_audio.py)."""
    clip = speech_clips()[0].copy()
    clip[5000] = np.nan
    out = np.asarray(fbank(clip[None], SC))[0]
    assert not np.isfinite(out[(5000 - 400) // 160 + 1:5000 // 160 + 1]).any()
    assert np.isfinite(out[:(5000 - 400) // 160 + 1]).all()


def test_bad_inputs_and_settings_raise():
    with pytest.raises(TypeError, match="float waveforms"):
        fbank(np.zeros((1, RATE), np.int16), SC)
    with pytest.raises(ValueError, match="invalid FeatureConfig: window must be one of Kaldi's hanning, hamming"):
        fbank(np.zeros((1, RATE), np.float32), SC.replace(window="kaiser"))
    for field, value, problem in (("std", 0.0, "std must be a positive number"),
                                  ("sample_rate", 0, "sample_rate must be a positive integer"),
                                  ("mean", float("nan"), "mean must be a finite number"),
                                  ("frame_shift_ms", 0.01, "frames of 25 ms every 0.01 ms are shorter than a sample at 16000 Hz"),
                                  ("frame_length_ms", 0.1, "frames of 0.1 ms every 10 ms are shorter than two samples"),
                                  ("preemphasis", 1.5, r"preemphasis must be in \[0, 1\], got 1.5"),
                                  ("high_freq", 9000, r"need 0 <= low_freq < high_freq <= Nyquist \(8000 Hz\); got "
                                                      r"low_freq 20, high_freq 9000")):
        with pytest.raises(ValueError, match=f"invalid FeatureConfig: {problem}"):
            SC.replace(**{field: value})
    with pytest.raises(ValueError, match="spectrum_dtype"):
        fbank(np.zeros((1, RATE), np.float32), SC, spectrum_dtype="bfloat16")


# ----------------------------------------------------------------------------------------------------------
# Inside jitted steps and transformations

def test_leading_dimensions():
    clips = np.stack(speech_clips()[:4])
    flat = np.asarray(fbank(clips, SC))
    np.testing.assert_array_equal(fbank(clips.reshape(2, 2, RATE), SC), flat.reshape(2, 2, 98, 128))
    np.testing.assert_array_equal(fbank(clips[0], SC), fbank(clips[:1], SC)[0])


def test_a_big_eager_batch_on_cpu_is_computed_in_groups_with_the_same_values(monkeypatch):
    """More than 32 clips in an eager call run 16 at a time (faster on CPU), bit for bit as the whole batch, with
    lengths and leading dimensions; under jit the batch is computed whole (a train step's sharded batch axis
    must not be looped over)."""
    rng = np.random.default_rng(4)
    clips = speech_clips()
    batch = np.stack([clips[i % len(clips)] * rng.uniform(0.2, 1.0) for i in range(37)]).astype(np.float32)
    lengths = rng.integers(300, RATE + 1, len(batch))  # 37 clips: two groups of 16 and a remainder of 5
    grouped, calls = features._grouped, []

    def spy(function, *rest):
        calls.append(function)
        return grouped(function, *rest)

    monkeypatch.setattr(features, "_grouped", spy)

    np.testing.assert_array_equal(input_values(batch, SC, lengths), features._input_values(batch, SC, lengths))
    np.testing.assert_array_equal(input_values(jax.device_put(batch), SC), features._input_values(batch, SC))
    three_d = batch[:36].reshape(3, 12, RATE)
    np.testing.assert_array_equal(fbank(three_d, SC, spectrum_dtype="float32"),
                                  features._fbank(three_d, SC, spectrum_dtype="float32"))
    assert calls == [features._input_values, features._input_values, features._fbank]

    np.testing.assert_array_equal(jax.jit(lambda w: input_values(w, SC))(batch), features._input_values(batch, SC))
    np.testing.assert_array_equal(input_values(batch[:32], SC), features._input_values(batch[:32], SC))
    # clips without a frame are left to the whole computation (grouping them divided by zero)
    assert fbank(np.zeros((33, 300), np.float32), SC).shape == (33, 0, SC.num_mel_bins)
    empty = np.zeros((40, 0), np.float32)
    np.testing.assert_array_equal(input_values(empty, SC), features._input_values(empty, SC))
    assert len(calls) == 3  # neither under jit, nor for 32 clips, nor for clips without a frame


def test_pieces_inside_a_jitted_step_with_masks_compile_once():
    """The training pattern: fbank and pad, a mask, then normalise, all in one jitted step."""
    clips = np.stack(speech_clips())

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(waveforms, width):
        spectrogram = pad_or_truncate(fbank(waveforms, SC), SC.target_length)
        masked = jnp.where(jnp.arange(SC.num_mel_bins) < width, 0.0, spectrogram)
        return normalize(masked, SC)

    for width in (0, 10):
        out = np.asarray(step(clips, width))
    np.testing.assert_allclose(out[..., :10], -SC.mean / (2 * SC.std), rtol=1e-6)
    np.testing.assert_array_equal(out[..., 10:], np.asarray(input_values(clips, SC))[..., 10:])


def test_float64_spectrum_survives_vmap_and_differentiates():
    """vmap of a jitted function re-runs its primitives after tracing, with 64-bit types off; the float64
    step must still be float64 there (the loud tone shows any drop to float32), and grad must work."""
    tone = np.stack([synthetic()["loud tone"]] * 2)
    direct = np.asarray(fbank(tone, SC))
    step = jax.jit(lambda waveform: fbank(waveform, SC))
    np.testing.assert_array_equal(jax.vmap(step)(tone), direct)
    np.testing.assert_array_equal(jax.lax.map(step, tone, batch_size=2), direct)
    gradient = jax.grad(lambda waveforms: fbank(waveforms, SC).sum())(tone)
    gradient32 = jax.grad(lambda waveforms: fbank(waveforms, SC, spectrum_dtype="float32").sum())(tone)
    assert gradient.dtype == jnp.float32 and np.isfinite(gradient).all()
    np.testing.assert_allclose(gradient, gradient32, rtol=1e-2, atol=1e-2 * np.abs(gradient32).max())


# ----------------------------------------------------------------------------------------------------------
# Long recordings

def test_stream_equals_one_shot():
    rng = np.random.default_rng(3)
    waveform = np.concatenate(speech_clips() * 2 + [0.1 * rng.standard_normal(7777).astype(np.float32)])
    one_shot = np.asarray(fbank(waveform[None], SC))[0]
    cuts = np.cumsum(rng.integers(1, 9000, 40))
    blocks = np.split(waveform, cuts[cuts < len(waveform)])
    streamed = np.concatenate([np.asarray(block) for block in fbank_stream(blocks, SC, block_frames=37)])
    assert streamed.shape == one_shot.shape
    np.testing.assert_allclose(streamed, one_shot, atol=1e-5)
    assert [len(block) for block in fbank_stream([waveform[:300]], SC)] == []
