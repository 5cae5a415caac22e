"""On-device augmentation against the recipe of AST's src/dataloader.py: bounds, statistics, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ast_jax import augment
from ast_jax.features import FeatureConfig

FEATURES = FeatureConfig.for_dataset("speech_commands")
RECIPE = dict(mixup=0.5, mixup_alpha=10.0, freqm=48, timem=48, noise=True, roll=10)


def one_hot_batch(batch, samples=64, seed=0):
    rng = np.random.default_rng(seed)
    audio = rng.uniform(-0.5, 0.5, (batch, samples)).astype(np.float32) + rng.uniform(-0.1, 0.1, (batch, 1))
    return jnp.asarray(audio, jnp.float32), jnp.eye(batch, dtype=jnp.float32)


def test_mixup_lambda_is_beta_10_10():
    audio, targets = jnp.zeros((20000, 8)), jnp.zeros((20000, 3))
    _, _, lam = augment.mixup(jax.random.PRNGKey(0), audio, targets, 1.0, 10.0)
    lam = np.asarray(lam)
    assert 0 < lam.min() and lam.max() < 1
    assert abs(lam.mean() - 0.5) < 0.003  # Beta(10, 10): mean 1/2, variance 1/84
    assert abs(lam.var() - 1 / 84) < 0.05 / 84 * 4


def test_mixup_rate_and_soft_targets_and_waveform_mix():
    batch = 4000
    audio, targets = one_hot_batch(batch)
    mixed, mixed_targets, lam = augment.mixup(jax.random.PRNGKey(1), audio, targets, 0.5, 10.0)
    lam, mixed, mixed_targets = np.asarray(lam), np.asarray(mixed), np.asarray(mixed_targets)
    applied = lam < 1
    assert abs(applied.mean() - 0.5) < 0.03
    np.testing.assert_allclose(mixed_targets.sum(1), 1.0, atol=1e-5)
    # Each row keeps lam of its own label and gives 1 - lam to its partner's label (the same row: lam + 1 - lam).
    own = mixed_targets[np.arange(batch), np.arange(batch)]
    assert (own >= lam - 1e-6).all()
    others = mixed_targets.copy()
    others[np.arange(batch), np.arange(batch)] = 0
    partner = np.where(others.max(1) > 0, others.argmax(1), np.arange(batch))
    np.testing.assert_allclose(others.max(1)[partner != np.arange(batch)], 1 - lam[partner != np.arange(batch)], atol=1e-6)
    centred = np.asarray(audio) - np.asarray(audio).mean(1, keepdims=True)
    expected = lam[:, None] * centred + (1 - lam[:, None]) * centred[partner]
    expected -= expected.mean(1, keepdims=True)
    np.testing.assert_allclose(mixed, expected, atol=1e-5)
    untouched = ~applied
    np.testing.assert_allclose(mixed[untouched], centred[untouched], atol=1e-6)
    np.testing.assert_array_equal(mixed_targets[untouched], np.asarray(targets)[untouched])


def test_mask_bounds_and_width_distribution():
    batch, frames, bins = 5000, 128, 128
    ones = jnp.ones((batch, frames, bins))
    for axis, size in ((2, bins), (1, frames)):
        masked = np.asarray(augment.mask_along(jax.random.PRNGKey(axis), ones, axis, 48))
        zero = (masked == 0).all(axis=3 - axis)  # (B, size): which positions of the axis are masked
        assert set(np.unique(masked)) <= {0.0, 1.0}
        assert ((masked == 0).any(axis=3 - axis) == zero).all()  # whole rows/columns, nothing partial
        width = zero.sum(1)
        assert width.min() == 0 and width.max() == 47  # uniform in [0, 48)
        assert abs(width.mean() - 23.5) < 0.6
        starts = np.argmax(zero, axis=1)
        contiguous = [zero[i, starts[i]:starts[i] + width[i]].all() for i in range(batch)]
        assert all(contiguous)
        assert (starts[width > 0] + width[width > 0] <= size).all()
        # torchaudio's rule can start at 0 but never reaches the last position (start + floor(value) < size).
        assert starts[width > 0].min() == 0 and (starts + width)[width > 0].max() == size - 1


def test_roll_range_and_circularity():
    batch, frames = 4000, 128
    ramp = jnp.broadcast_to(jnp.arange(frames, dtype=jnp.float32)[None, :, None], (batch, frames, 2))
    rolled = np.asarray(augment.roll_time(jax.random.PRNGKey(3), ramp, 10))
    shift = (-rolled[:, 0, 0]) % frames  # out[0] = in[-shift]
    shift = np.where(shift > frames // 2, shift - frames, shift)
    assert shift.min() == -10 and shift.max() == 9
    expected = (np.arange(frames)[None, :] - shift[:, None]) % frames
    np.testing.assert_array_equal(rolled[:, :, 0], expected)


@pytest.fixture(scope="module")
def speech():
    from ast_jax.audio import load_audio
    from pathlib import Path

    clips = sorted((Path(__file__).parent / "data" / "speech_commands_mini").glob("*/*.wav"))[:8]
    audio = np.stack([load_audio(p)[:16000] for p in clips if "background" not in str(p)][:6])
    return jnp.asarray(audio), jnp.eye(len(audio), 12)


def test_eval_path_is_input_values(speech):
    from ast_jax.features import input_values

    audio, targets = speech
    inputs, out_targets = jax.jit(lambda a, t: augment.train_inputs(jax.random.PRNGKey(0), a, t, FEATURES, {}))(
        audio, targets)
    np.testing.assert_allclose(inputs, input_values(audio, FEATURES), atol=1e-5)
    np.testing.assert_array_equal(out_targets, targets)


def test_masks_fill_zero_before_normalisation_and_noise_bounds(speech):
    audio, targets = speech
    rng = jax.random.PRNGKey(7)
    clean, _ = augment.train_inputs(rng, audio, targets, FEATURES, {})
    masked, _ = augment.train_inputs(rng, audio, targets, FEATURES, dict(freqm=48, timem=48))
    fill = -FEATURES.mean / (2 * FEATURES.std)
    changed = ~np.isclose(np.asarray(masked), np.asarray(clean), atol=1e-6)
    assert changed.any()
    np.testing.assert_allclose(np.asarray(masked)[changed], fill, atol=1e-5)
    noisy, _ = augment.train_inputs(rng, audio, targets, FEATURES, dict(noise=True))
    added = np.asarray(noisy - clean)
    assert added.min() >= -1e-5 and added.max() < 0.1
    # One scale per clip times U[0, 1) per cell: within a clip, the mean is half the maximum.
    per_clip = added.reshape(len(added), -1)
    np.testing.assert_allclose(per_clip.mean(1) / per_clip.max(1), 0.5, atol=0.01)
    assert per_clip.max(1).std() > 0.005  # and the scales differ between clips


def test_recipe_is_deterministic_per_rng_and_jittable(speech):
    audio, targets = speech
    step = jax.jit(lambda rng, a, t: augment.train_inputs(rng, a, t, FEATURES, RECIPE))
    first, first_targets = step(jax.random.PRNGKey(11), audio, targets)
    again, again_targets = step(jax.random.PRNGKey(11), audio, targets)
    other, _ = step(jax.random.PRNGKey(12), audio, targets)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_targets, again_targets)
    assert not np.allclose(first, other)
    assert first.shape == (len(audio), FEATURES.target_length, FEATURES.num_mel_bins)
    np.testing.assert_allclose(np.asarray(first_targets).sum(1), 1.0, atol=1e-5)


def test_unknown_augment_field_is_an_error():
    with pytest.raises(ValueError, match="unknown augment fields: mixpu"):
        augment.settings({"mixpu": 0.5})


def test_mixup_partners_are_valid_rows_only():
    batch = 64
    audio, targets = one_hot_batch(batch)
    valid = jnp.arange(batch) < 40
    _, mixed_targets, lam = augment.mixup(jax.random.PRNGKey(5), audio, targets, 1.0, 10.0, valid)
    mixed_targets = np.asarray(mixed_targets)
    assert np.all(mixed_targets[:, 40:][np.asarray(valid)] == 0)  # no valid row took a padding row's label
    np.testing.assert_allclose(mixed_targets[np.asarray(valid)].sum(1), 1.0, atol=1e-5)


def test_true_lengths_centre_over_the_clip_and_pad_the_partner():
    audio = jnp.asarray(np.random.default_rng(2).uniform(0.0, 0.5, (2, 100)), jnp.float32)
    lengths = jnp.array([60, 100])
    audio = audio.at[0, 60:].set(0.0)
    targets = jnp.eye(2)
    # Find a key whose draws mix row 0 with row 1 and row 1 with row 0.
    for seed in range(200):
        mixed, mixed_targets, lam = augment.mixup(jax.random.PRNGKey(seed), audio, targets, 1.0, 10.0,
                                                  num_samples=lengths)
        if np.asarray(mixed_targets)[0, 1] > 0 and np.asarray(mixed_targets)[1, 0] > 0:
            break
    else:
        pytest.fail("no key among 200 mixes the two rows with each other")
    lam, mixed, a = np.asarray(lam), np.asarray(mixed), np.asarray(audio)
    first, second = a[0, :60] - a[0, :60].mean(), a[1] - a[1].mean()
    expected0 = lam[0] * first + (1 - lam[0]) * second[:60]  # the partner cut to the first clip's length
    expected1 = lam[1] * second + (1 - lam[1]) * np.pad(first, (0, 40))  # or zero-padded to the second's
    np.testing.assert_allclose(mixed[0, :60], expected0 - expected0.mean(), atol=1e-6)
    np.testing.assert_array_equal(mixed[0, 60:], 0.0)
    np.testing.assert_allclose(mixed[1], expected1 - expected1.mean(), atol=1e-6)


def test_eval_path_with_lengths_is_input_values(speech):
    from ast_jax.features import input_values

    audio, targets = speech
    lengths = jnp.array([16000, 9000, 12345, 16000, 400, 8000])[:len(audio)]
    audio = jnp.where(jnp.arange(16000)[None] < lengths[:, None], audio, 0.0)
    inputs, _ = augment.train_inputs(jax.random.PRNGKey(0), audio, targets, FEATURES, {}, num_samples=lengths)
    np.testing.assert_allclose(inputs, input_values(audio, FEATURES, lengths), atol=1e-5)
    fill = -FEATURES.mean / (2 * FEATURES.std)  # zero rows before normalisation
    np.testing.assert_allclose(np.asarray(inputs)[1, 1 + (9000 - 400) // 160:], fill, atol=1e-6)
