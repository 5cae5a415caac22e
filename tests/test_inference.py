"""The Python side of inference: the jitted predictor, `ast_jax.pipeline`, windowed prediction, attention maps.

References are independent of our feature code: transformers' ASTFeatureExtractor and audio-classification
pipeline, and numpy re-derivations of attention rollout.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from ast_jax.features import FeatureConfig
from ast_jax.inference import Pipeline, Predictor, expand_inputs, pipeline
from ast_jax.model import ASTConfig, init_params
from ast_jax.pretrained import Pretrained

RATE = 16000
LABELS = ["yes", "no", "up", "down", "left"]
# A tiny model over 48 frames of 32 mel bins: 7,920 samples (0.495 s) fill its input.
FEATURES = FeatureConfig.for_dataset("speech_commands", num_mel_bins=32, target_length=48)
CONFIG = ASTConfig.from_size("tiny224", num_layers=2, num_mel_bins=32, max_length=48, num_labels=len(LABELS))


def tiny_model(activation: str = "softmax", seed: int = 0) -> Pretrained:
    return Pretrained(CONFIG, init_params(CONFIG, seed), FEATURES, list(LABELS), activation, source="test")


def waveform(seconds: float, seed: int = 0, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * frequency * t) + 0.05 * noise).astype(np.float32)


def extractor_scores(model: Pretrained, waveforms, activation: str) -> np.ndarray:
    """Scores with transformers' ASTFeatureExtractor making the features (an independent reference)."""
    from transformers import ASTFeatureExtractor

    extractor = ASTFeatureExtractor(**{k: v for k, v in model.features.to_hf_preprocessor_config().items()
                                       if k != "feature_extractor_type"})
    values = extractor(list(waveforms), sampling_rate=RATE, return_tensors="np")["input_values"]
    logits, _ = model.apply(jnp.asarray(values))
    return np.asarray(jax.nn.sigmoid(logits) if activation == "sigmoid" else jax.nn.softmax(logits, -1))


@pytest.fixture(scope="module")
def model() -> Pretrained:
    return tiny_model()


@pytest.fixture(scope="module")
def classify(model) -> Pipeline:
    return pipeline(model, batch_size=4)


def test_scores_match_transformers_feature_extractor(model, classify):
    # shorter than the input (padded with the extractor's zero rows), exactly the input, and longer (cut)
    clips = [waveform(0.3, 1), waveform(7920 / RATE, 2), waveform(1.7, 3), waveform(0.03, 4)]
    ours = classify.predictor.outputs(clips, ("scores",))["scores"]
    np.testing.assert_allclose(ours, extractor_scores(model, clips, "softmax"), atol=2e-5)
    sigmoid = Predictor(model, activation="sigmoid").outputs(clips, ("scores",))["scores"]
    np.testing.assert_allclose(sigmoid, extractor_scores(model, clips, "sigmoid"), atol=2e-5)


def test_pipeline_accepts_what_transformers_accepts(classify, tmp_path):
    clip = waveform(0.4, 5)
    path = tmp_path / "clip.wav"
    sf.write(path, clip, RATE, subtype="FLOAT")
    from_array = classify(clip)
    assert [set(item) for item in from_array] == [{"score", "label"}] * 5
    scores = [item["score"] for item in from_array]
    assert scores == sorted(scores, reverse=True) and sorted(i["label"] for i in from_array) == sorted(LABELS)
    assert abs(sum(scores) - 1) < 1e-5  # softmax over all five labels
    for other in (classify(str(path)), classify(path.read_bytes()), classify({"array": clip, "sampling_rate": RATE}),
                  classify({"raw": clip, "sampling_rate": RATE})):
        assert [i["label"] for i in other] == [i["label"] for i in from_array]
        np.testing.assert_allclose([i["score"] for i in other], scores, atol=1e-6)
    # a dict at another rate is resampled to the model's rate
    at_8k = {"array": clip[::2].copy(), "sampling_rate": 8000}
    assert len(classify(at_8k, top_k=2)) == 2
    # a list gives one list per input; top_k=None gives every label
    many = classify([clip, str(path)], top_k=None)
    assert len(many) == 2 and all(len(result) == len(LABELS) for result in many)
    assert classify(clip, top_k=100) == classify(clip, top_k=None)
    # array types numpy reads (a torch tensor, also one that needs gradients; a jax array), an empty list, and an
    # iterator, classified as it comes (a generator of results, as transformers gives)
    torch = pytest.importorskip("torch")
    for other in (classify(torch.from_numpy(clip).requires_grad_()), classify(jnp.asarray(clip)),
                  classify({"raw": torch.from_numpy(clip), "sampling_rate": RATE})):
        np.testing.assert_allclose([i["score"] for i in other], scores, atol=1e-6)
    assert classify([]) == []
    results = classify(item for item in (clip, str(path)))
    assert not isinstance(results, list) and len(list(results)) == 2
    # bfloat16 samples (jax, torch) are read as float32; predict_files takes one path as well as a list
    for low in (jnp.asarray(clip, jnp.bfloat16), torch.from_numpy(clip).bfloat16()):
        expected = classify(np.asarray(jnp.asarray(clip, jnp.bfloat16), np.float32))
        assert classify(low) == expected
    [(name, out)] = list(classify.predict_files(str(path)))
    assert name == str(path) and out["labels"] == classify(str(path))


def test_one_compile_per_batch_shape_and_padding_is_harmless(model):
    predictor = Predictor(model, batch_size=4)
    clips = [waveform(0.2 + 0.05 * i, i) for i in range(7)]  # batches of 4 and 3 (padded to 4)
    batched = predictor.outputs(clips, ("scores", "pooled"))
    assert list(predictor._compiled) == [(4, ("pooled", "scores"))]
    one_by_one = np.concatenate([predictor.outputs([clip], ("scores",))["scores"] for clip in clips])
    np.testing.assert_allclose(batched["scores"], one_by_one, atol=1e-6)
    assert sorted(predictor._compiled) == [(1, ("scores",)), (4, ("pooled", "scores"))]
    assert batched["pooled"].shape == (7, CONFIG.hidden_size)


SPLIT_SCRIPT = """
import sys
import numpy as np
from ast_jax import _cpu_devices
print(_cpu_devices.configure())
import jax
from test_inference import tiny_model, waveform
from ast_jax.inference import Predictor
predictor = Predictor(tiny_model("sigmoid", seed=3), batch_size=6)
print(len(predictor.devices), predictor.spreads(6), predictor.spreads(4), predictor.spreads(1))
clips = [waveform(0.2 + 0.05 * i, i, 300.0 + 40 * i) for i in range(9)]
outputs = ("logits", "pooled", "scores", "tokens")
np.savez(sys.argv[1] + "/one.npz", **predictor.outputs(clips[:1], outputs))  # one clip: the first device only
first = jax.tree_util.tree_leaves(predictor.params)
print("copies", sorted({len(leaf.devices()) for leaf in first}), predictor._replicated_params is None)
np.savez(sys.argv[1] + "/nine.npz", **predictor.outputs(clips, outputs))   # batches of 6, then 3 padded to 6
np.savez(sys.argv[1] + "/four.npz", **predictor.outputs(clips[:4], outputs))  # a batch of 4
shared = all(leaf.unsafe_buffer_pointer() == next(s.data for s in whole.addressable_shards
                                                  if s.device == jax.devices()[0]).unsafe_buffer_pointer()
             for leaf, whole in zip(jax.tree_util.tree_leaves(predictor.params),
                                    jax.tree_util.tree_leaves(predictor._replicated_params)))
print("shared", shared)
print(sorted(key[0] for key in predictor._compiled))
"""


def test_batches_split_across_two_cpu_devices_equal_one_device(tmp_path):
    """What the `ast-jax` inference commands run on a CPU of two or more cores (ast_jax/_cpu_devices.py): two
    CPU devices, each batch split across them when its rows divide, else run on the first; the outputs equal
    those of one device up to float32 rounding of the different row counts."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    result = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    if cores < 2:  # nothing to split over: configure leaves JAX its one CPU device
        assert result.stdout.split("\n")[:2] == ["None", "1 False False False"]
        return
    # one clip leaves a single copy of the parameters; the first split batch copies them to the second device,
    # and the first device then holds one copy, shared by both uses
    assert result.stdout.split("\n")[:5] == ["2", "2 True True False", "copies [1] True", "shared True",
                                              "[1, 4, 6]"]
    predictor = Predictor(tiny_model("sigmoid", seed=3), batch_size=6)
    assert len(predictor.devices) == 1 and not predictor.spreads(6)
    clips = [waveform(0.2 + 0.05 * i, i, 300.0 + 40 * i) for i in range(9)]
    for name, count in (("nine", 9), ("four", 4), ("one", 1)):
        split = np.load(tmp_path / f"{name}.npz")
        whole = predictor.outputs(clips[:count], ("logits", "pooled", "scores", "tokens"))
        for key, value in whole.items():
            assert split[key].shape == value.shape
            np.testing.assert_allclose(split[key], value, atol=1e-5, rtol=1e-5, err_msg=f"{name} {key}")


def test_windows_cover_the_recording_and_equal_the_cut_windows(classify, tmp_path):
    recording = waveform(1.3, 7, frequency=300.0)  # windows of 0.4 s: the tiny model's input is 0.495 s
    recording[RATE // 2:RATE] = waveform(0.5, 8, frequency=1200.0)
    windows = classify.windows(recording, 0.4, 0.2, top_k=3)
    assert [(w["start"], w["end"]) for w in windows] == [
        (0.0, 0.4), (0.2, 0.6), (0.4, 0.8), (0.6, 1.0), (0.8, 1.2), (1.0, 1.3)]
    for w in windows:
        alone = classify(recording[int(w["start"] * RATE):int(w["end"] * RATE)], top_k=3)
        assert [i["label"] for i in w["labels"]] == [i["label"] for i in alone]
        np.testing.assert_allclose([i["score"] for i in w["labels"]], [i["score"] for i in alone], atol=1e-6)
    # a file is read block by block and gives the same windows
    path = tmp_path / "long.wav"
    sf.write(path, recording, RATE, subtype="FLOAT")
    from_file = classify.windows(str(path), 0.4, 0.2, top_k=3)
    assert [(w["start"], w["end"]) for w in from_file] == [(w["start"], w["end"]) for w in windows]
    for a, b in zip(from_file, windows):
        np.testing.assert_allclose([i["score"] for i in a["labels"]], [i["score"] for i in b["labels"]], atol=1e-5)
    # a recording shorter than one window is one window
    assert [(w["start"], w["end"]) for w in classify.windows(recording[:4000], 0.4)] == [(0.0, 0.25)]
    # a last window shorter than one 25 ms frame (here 1 sample) has nothing to classify and is left out
    assert [(w["start"], w["end"]) for w in classify.windows(recording[:12801], 0.4)] == [(0.0, 0.4), (0.4, 0.8)]


def test_windows_longer_than_the_input_empty_and_damaged_recordings(classify, tmp_path):
    with pytest.raises(ValueError, match=r"window 1 s is longer than the model's input \(0.495 s, 48 frames\)"):
        classify.windows(waveform(2.0), 1.0)
    assert len(classify.windows(waveform(2.0), 0.495)) == 4  # exactly the input; the 20 ms tail is left out
    # 0.5 s makes 48 frames too (its last 80 samples, short of a frame, make none): it fits; 0.505 s does not
    assert [w["end"] for w in classify.windows(waveform(2.0), 0.5)] == [0.5, 1.0, 1.5, 2.0]
    with pytest.raises(ValueError, match=r"window 0.505 s is longer than the model's input \(0.495 s, 48 frames\)"):
        classify.windows(waveform(2.0), 0.505)
    # a hop longer than the window, and the recording ends in the skipped gap: one window, no error
    sf.write(tmp_path / "gap.wav", waveform(0.3125), RATE, subtype="FLOAT")
    for recording in (waveform(0.3125), str(tmp_path / "gap.wav")):
        assert [(w["start"], w["end"]) for w in classify.windows(recording, 0.25, 0.35)] == [(0.0, 0.25)]
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(ValueError, match="zero.wav: no audio samples"):
        classify.windows(str(tmp_path / "zero.wav"), 0.4)
    # NaN at 3.0 s of a 5 s file: the windows before it are all given, then the error
    recording = waveform(5.0, 3)
    recording[3 * RATE] = np.nan
    sf.write(tmp_path / "nan.wav", recording, RATE, subtype="FLOAT")
    given = []
    with pytest.raises(ValueError, match=r"nan.wav: contains NaN or Inf samples \(first at 3.000 s\)"):
        for window in classify.iter_windows(str(tmp_path / "nan.wav"), 0.25, 0.25):
            given.append(window["end"])
    assert given == [0.25 * (k + 1) for k in range(12)]
    given = []
    with pytest.raises(ValueError, match=r"array: contains NaN or Inf samples \(first at 3.000 s\)"):
        for window in classify.iter_windows(recording, 0.25, 0.25):  # an array, likewise
            given.append(window["end"])
    assert given == [0.25 * (k + 1) for k in range(12)]
    # a WAV cut after 3.0 s of its 5 s: likewise the windows before the cut, then the error
    sf.write(tmp_path / "cut.wav", waveform(5.0, 3), RATE, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "cut.wav").read_bytes()[:44 + 3 * RATE * 2])
    given = []
    with pytest.raises(ValueError, match=r"cut.wav: truncated \(header promises 160000 bytes of samples, the file "
                                         r"holds 96000\)"):
        for window in classify.iter_windows(str(tmp_path / "cut.wav"), 0.25, 0.25):
            given.append(window["end"])
    assert given == [0.25 * (k + 1) for k in range(12)]


def test_bad_inputs_are_named(classify):
    nan = waveform(0.3)
    nan[10] = np.nan
    with pytest.raises(ValueError, match="^array: contains NaN"):
        classify(nan)
    with pytest.raises(ValueError, match="^array: "):
        classify({"array": np.zeros(0, np.float32), "sampling_rate": RATE})
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        classify("missing.wav")
    with pytest.raises(TypeError, match="cannot classify an object of type object"):
        classify(object())
    # samples in a list are several inputs, as in transformers' pipeline: the message says how to give one
    for samples in ([0.1, -0.2, 0.3], (1, 2), [np.float32(0.5)], np.float64(0.5)):
        with pytest.raises(TypeError, match=r"cannot classify a single number \(\w+\): a list or tuple holds "
                                            "several inputs; give one waveform as a NumPy array"):
            classify(samples)
    clip = waveform(0.3)
    for bad in (2.5, "3", True, 0):
        with pytest.raises(ValueError, match=f"top_k must be a positive integer .*got {bad!r}"):
            classify(clip, top_k=bad)
    for rate in ("16000", 16000.5, 0):
        with pytest.raises(ValueError, match=f"source_rate must be a positive whole number of Hz, got {rate!r}"):
            classify({"array": clip, "sampling_rate": rate})
    with pytest.raises(TypeError, match="opened in text mode"):
        classify(open(__file__))
    with pytest.raises(ValueError, match="batch size must be a positive integer, got 2.5"):
        pipeline(classify.model, batch_size=2.5)
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        pipeline(classify.model, workers=0)
    with pytest.raises(ValueError, match="no waveforms to compute outputs for"):
        classify.predictor.outputs([])


def test_overflowing_inputs_are_named_not_scored_nan(classify, tmp_path):
    """Finite samples so large that the filterbank's power overflows: every entry point names the input."""
    loud = waveform(0.3) * np.float32(1e20)
    sf.write(tmp_path / "loud.wav", loud, RATE, subtype="FLOAT")
    with pytest.raises(ValueError, match="^input 1: the features are not finite"):
        classify([waveform(0.3), loud])
    with pytest.raises(ValueError, match=f"^{tmp_path / 'loud.wav'}: the features are not finite"):
        classify(str(tmp_path / "loud.wav"))
    results = classify(iter([waveform(0.3), loud]))
    assert len(next(results)) == 5
    with pytest.raises(ValueError, match="^input 1: the features are not finite"):
        next(results)
    with pytest.raises(ValueError, match="^input at 0.00 s: the features are not finite"):
        classify.windows(loud, 0.25)


def test_an_iterators_inputs_are_classified_as_they_come(model):
    """Like transformers' pipeline (batch size 1): a result for each input before the next is asked for, unless
    the pipeline was made with a batch size, which it fills first."""
    asked = []

    def inputs():
        for seed in range(3):
            asked.append(seed)
            yield waveform(0.3, seed)

    results = pipeline(model)(inputs(), top_k=1)
    for expected in range(3):
        next(results)
        assert asked == list(range(expected + 1))
    asked.clear()
    next(pipeline(model, batch_size=2)(inputs(), top_k=1))
    assert asked == [0, 1]


def test_bfloat16_outputs_are_float32(model):
    """Computed in bfloat16, what comes back is float32 numpy (ml_dtypes' bfloat16 arrays are refused by torch
    and saved by np.save as raw bytes)."""
    classify = pipeline(model, dtype="bfloat16")
    out = classify.predictor.outputs([waveform(0.3)], ("scores", "pooled", "tokens", "attention"))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(out)} == {np.dtype(np.float32)}
    assert len(jax.tree_util.tree_leaves(out)) == 3 + CONFIG.num_layers  # an attention map per layer
    full = pipeline(model).predictor.outputs([waveform(0.3)], ("pooled",))["pooled"]
    assert 0 < np.abs(out["pooled"] - full).max() < 0.1  # really computed in bfloat16, and close


def test_bfloat16_predictor_stores_its_tables_in_bfloat16(model):
    """The kernels and tables (cast by the model on every call anyway) are kept in bfloat16 on the device, the
    vectors and the head in float32; the outputs are those of the model applied to the float32 parameters, bit
    for bit."""
    predictor = Predictor(dataclasses.replace(model, config=model.config.replace(dtype="bfloat16")))
    dtypes = {jax.tree_util.keystr(path): leaf.dtype
              for path, leaf in jax.tree_util.tree_leaves_with_path(predictor.params)}
    assert dtypes["['block0']['mlp']['fc1']['kernel']"] == jnp.bfloat16
    assert dtypes["['pos_embed']"] == dtypes["['patch_embed']['kernel']"] == jnp.bfloat16
    assert dtypes["['block0']['mlp']['fc1']['bias']"] == dtypes["['norm']['scale']"] == jnp.float32
    assert dtypes["['head']['kernel']"] == jnp.float32  # the head computes in float32
    lengths = np.array([predictor.clip_samples, predictor.clip_samples // 2], np.int32)
    rows = np.stack([waveform(1.0, seed)[:predictor.clip_samples] for seed in (1, 2)])
    rows[1, lengths[1]:] = 0
    stored = predictor.compiled(2, ("logits", "pooled"))(predictor.params, rows, lengths)
    cast_each_call = jax.jit(predictor._function(("logits", "pooled")))(model.params, rows, lengths)
    for name in ("logits", "pooled"):
        np.testing.assert_array_equal(stored[name], cast_each_call[name])


def test_dtype_may_be_given_as_a_numpy_jax_or_torch_dtype(model):
    torch = pytest.importorskip("torch")
    clip = waveform(0.4)
    expected = pipeline(model, dtype="bfloat16")(clip, top_k=None)
    assert expected != pipeline(model)(clip, top_k=None)  # bfloat16 really used
    for dtype in (jnp.bfloat16, torch.bfloat16, np.dtype(jnp.bfloat16)):
        assert pipeline(model, dtype=dtype)(clip, top_k=None) == expected
    assert pipeline(model, dtype=torch.float32)(clip, top_k=None) == pipeline(model)(clip, top_k=None)
    for bad in ("bf16", torch.int8, np.int32):
        with pytest.raises(ValueError, match=r"^dtype must be one of float32, bfloat16, float16, got [^\n]+$"):
            pipeline(model, dtype=bad)


def test_expand_inputs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.wav", "a/b/two.flac", "a/notes.txt", "three.wav"):
        (tmp_path / name).write_bytes(b"")
    files, unmatched = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*.wav"), str(tmp_path / "none*.wav"),
                                      str(tmp_path / "missing.wav")])
    assert files == [str(tmp_path / "a/b/two.flac"), str(tmp_path / "a/one.wav"), str(tmp_path / "three.wav"),
                     str(tmp_path / "missing.wav")]
    assert unmatched == [str(tmp_path / "none*.wav")]


def test_expand_inputs_names_that_look_like_globs_and_globs_through_links(tmp_path):
    for name in ("take[1].wav", "take1.wav", "take*2.wav", "take-b2.wav", "sub/c.wav"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    # a file that exists is itself, not the glob its name would be
    files, unmatched = expand_inputs([str(tmp_path / "take[1].wav"), str(tmp_path / "take*2.wav")])
    assert files == [str(tmp_path / "take[1].wav"), str(tmp_path / "take*2.wav")] and unmatched == []
    files, _ = expand_inputs([str(tmp_path / "take[1]x.wav")])  # no such file: a glob (matching nothing)
    assert files == []
    # a link back up the tree: every file once, as a folder gives them; a link that leads nowhere is kept
    (tmp_path / "sub" / "loop").symlink_to("..")
    (tmp_path / "sub" / "gone.wav").symlink_to("missing.wav")
    files, _ = expand_inputs([str(tmp_path / "**" / "c.wav"), str(tmp_path / "sub" / "*.wav")])
    sub = tmp_path / "sub"
    assert files == [str(sub / "c.wav"), str(sub / "c.wav"), str(sub / "gone.wav")]


def test_attention_maps_rollout_and_grid(model):
    from ast_jax.explain import attention_rollout, grid_to_spectrogram, patch_grid

    out = Predictor(model, batch_size=2).outputs([waveform(0.4, 9), waveform(0.2, 10)],
                                                 ("attention", "rollout", "last_attention"))
    attention = out["attention"]  # tuple of (B, H, N, N) per block
    tokens = 2 + CONFIG.num_patches
    assert len(attention) == CONFIG.num_layers and attention[0].shape == (2, CONFIG.num_heads, tokens, tokens)
    # numpy re-derivation of Abnar & Zuidema's rollout
    expected = np.eye(tokens)[None]
    for weights in attention:
        mixed = weights.mean(axis=1) + np.eye(tokens)
        mixed /= mixed.sum(-1, keepdims=True)
        expected = mixed @ expected
    np.testing.assert_allclose(out["rollout"], expected[:, :2], atol=1e-5)
    np.testing.assert_allclose(out["rollout"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(attention_rollout([jnp.asarray(w) for w in attention])).sum(-1), 1.0,
                               atol=1e-5)
    np.testing.assert_allclose(out["last_attention"], attention[-1].mean(axis=1)[:, :2], atol=1e-6)
    # patch tokens are frequency-major: token 2 + f * T' + t is patch (f, t)
    grid = patch_grid(np.arange(tokens, dtype=float), CONFIG)
    assert grid.shape == (CONFIG.frequency_patches, CONFIG.time_patches) == (2, 4)
    assert grid[1, 2] == 2 + 1 * CONFIG.time_patches + 2
    heat = grid_to_spectrogram(grid, CONFIG)
    assert heat.shape == (CONFIG.num_mel_bins, CONFIG.max_length)
    assert heat[0, 0] == grid[0, 0]
    assert heat[12, 12] == grid[:2, :2].mean()  # bins 10-15 x frames 10-15: four patches overlap there
    assert heat[12, 5] == (grid[0, 0] + grid[1, 0]) / 2
    assert np.isnan(heat[31, 0]) and np.isnan(heat[0, 47])  # the VALID convolution never covers these


def test_pipeline_matches_transformers_pipeline(tmp_path, randomize_torch):
    """Same random weights in transformers and ast-jax (the tokens and position table too, which transformers
    starts at zero: patches read in another order would then agree): the pipelines give the same labels and
    scores."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from ast_jax.convert import load_pretrained

    torch.manual_seed(0)
    hf_config = transformers.ASTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, num_mel_bins=32,
        max_length=48, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    hf_model = randomize_torch(transformers.ASTForAudioClassification(hf_config))
    with torch.no_grad():  # make the head's outputs spread out, so the ranking is not decided by noise
        hf_model.classifier.dense.weight.mul_(20)
    extractor = transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=48, mean=FEATURES.mean, std=FEATURES.std)
    folder = tmp_path / "hf"
    hf_model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    theirs = transformers.pipeline("audio-classification", model=str(folder), device="cpu")
    ours = pipeline(load_pretrained(str(folder)), batch_size=4)
    clips = [waveform(s, i) for i, s in enumerate((0.25, 0.5, 1.0))]
    for top_k in (3, None):
        expected = theirs([c.copy() for c in clips], top_k=top_k, function_to_apply="softmax")
        got = ours(clips, top_k=top_k, function_to_apply="softmax")
        for a, b in zip(got, expected):
            assert [i["label"] for i in a] == [i["label"] for i in b]
            np.testing.assert_allclose([i["score"] for i in a], [i["score"] for i in b], atol=1e-4)
    # ours defaults to the activation the model was trained with (the converter's choice for the folder)
    expected = theirs(clips[0].copy(), function_to_apply=ours.predictor.activation)
    np.testing.assert_allclose([i["score"] for i in ours(clips[0])], [i["score"] for i in expected], atol=1e-4)
