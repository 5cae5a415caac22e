"""The converter against transformers and torch: parity of logits and intermediates, the round trip through
export-hf, the original code's adaptations, bad input, and a torch-free load."""

import dataclasses
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ast_jax.cli import main
from ast_jax.convert import (adapt_imagenet_kernel, adapt_position_table, convert_source,
                             export_hf, linear_resize_weights, load_pretrained)
from ast_jax.data.speech_commands import LABELS_35
from ast_jax.pretrained import load_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
F = torch.nn.functional
REPO = Path(__file__).resolve().parents[1]


def hf_model(folder, randomize, seed=0, **config):
    """A transformers AST with random weights, saved with save_pretrained to `folder`."""
    config = dict(dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256), **config)
    model = randomize(transformers.ASTForAudioClassification(
        transformers.ASTConfig(attn_implementation="eager", **config)), seed)
    model.save_pretrained(folder)
    return model


def torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).logits.numpy()


# ---- parity with transformers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [
    # Speech Commands geometry at the full AST-base width and depth.
    dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, max_length=128,
         num_labels=35),
    dict(max_length=1024, num_labels=527),  # AudioSet geometry
    dict(max_length=1024, num_labels=527, frequency_stride=12, time_stride=12, num_hidden_layers=1),
    dict(max_length=1024, num_labels=527, frequency_stride=16, time_stride=16, num_hidden_layers=1),
    dict(max_length=256, num_mel_bins=64, num_labels=10, time_stride=12),
], ids=["speech-commands-base", "audioset", "stride12", "stride16", "64-mel-bins"])
def test_matches_transformers(tmp_path, randomize_torch, spectrogram, config):
    reference = hf_model(tmp_path, randomize_torch, **config)
    model = load_pretrained(tmp_path)
    x = spectrogram(2, config["max_length"], config.get("num_mel_bins", 128))
    logits, _ = model.apply(x)
    assert np.abs(np.asarray(logits) - torch_logits(reference, x)).max() <= 1e-4


def test_intermediates_match_transformers(tmp_path, randomize_torch, spectrogram):
    reference = hf_model(tmp_path, randomize_torch, max_length=128, num_labels=5, layer_norm_eps=1e-6)
    model = load_pretrained(tmp_path)
    assert (model.config.layer_norm_eps, model.config.head_layer_norm_eps) == (1e-6, 1e-6)
    x = spectrogram(2, 128)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x), output_hidden_states=True, output_attentions=True)
        pooled = reference.audio_spectrogram_transformer(torch.from_numpy(x)).pooler_output.numpy()
    _, out = model.apply(x, return_intermediates=True, return_attention=True)
    np.testing.assert_allclose(out["pooled"], pooled, atol=1e-5)
    for mine, hidden in zip(out["blocks"], theirs.hidden_states[1:], strict=True):
        np.testing.assert_allclose(mine, hidden.numpy(), atol=1e-5)
    for mine, weights in zip(out["attention"], theirs.attentions, strict=True):
        np.testing.assert_allclose(mine, weights.numpy(), atol=1e-6)


def test_reads_transformers_in_memory_names(tmp_path, randomize_torch, spectrogram):
    """transformers 5 renames modules in memory (layers.N.attention.q_proj...); a torch.save of its state_dict
    next to config.json converts like the hub-format files."""
    reference = hf_model(tmp_path, randomize_torch, max_length=128, num_labels=5)
    state = reference.state_dict()
    assert any(".q_proj." in name for name in state)
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    x = spectrogram(1, 128)
    for source in (tmp_path, tmp_path / "pytorch_model.bin"):
        logits, _ = load_pretrained(source).apply(x)
        assert np.abs(np.asarray(logits) - torch_logits(reference, x)).max() <= 1e-4


# ---- original checkpoints: labels, features, geometry -------------------------------------------------------------
def original_pth(path, randomize, width=64, layers=1, labels=35, frames=128, stride=10, prefix="module.", bins=128):
    """An original-format .pth (`module.v.*`, `module.mlp_head.*`, DeiT heads included) with random weights."""
    from test_model import OriginalAST

    reference = randomize(OriginalAST(width, max(width // 64, 1), layers, labels, frames, bins=bins, fstride=stride,
                                      tstride=stride))
    torch.save({prefix + name: value for name, value in reference.state_dict().items()}, path)
    return reference


def test_original_speech_commands_labels_and_features(tmp_path, randomize_torch):
    original_pth(tmp_path / "sc.pth", randomize_torch, width=192)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DeiT size: its heads are known
        conversion = convert_source(tmp_path / "sc.pth")
    assert conversion.model.config.num_heads == 3
    original_pth(tmp_path / "odd.pth", randomize_torch, width=128)  # the head count is a guess: said so
    with pytest.warns(UserWarning, match=r"odd.pth: 128 wide, none of the DeiT sizes the original code builds "
                                         r"\(192, 384, 768\); its attention is taken as 2 heads of 64"):
        convert_source(tmp_path / "odd.pth")
    model = conversion.model
    assert model.labels == LABELS_35 and model.activation == "sigmoid"
    assert (model.features.mean, model.features.std, model.features.target_length) == (-6.845978, 5.5654526, 128)
    assert conversion.dropped == ["v.head.bias", "v.head.weight", "v.head_dist.bias", "v.head_dist.weight"]


def test_original_audioset_with_label_csv(tmp_path, randomize_torch):
    original_pth(tmp_path / "as.pth", randomize_torch, labels=4, frames=1024, prefix="")
    csv = tmp_path / "labels.csv"
    csv.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n'
                   '2,/m/02zsn,"Female speech, woman speaking"\n3,/m/0ytgt,"Child speech, kid speaking"\n')
    model = load_pretrained(tmp_path / "as.pth", labels=str(csv))
    assert model.labels[1] == "Male speech, man speaking" and len(model.labels) == 4
    assert (model.features.mean, model.features.target_length) == (-4.2677393, 1024)
    assert load_pretrained(tmp_path / "as.pth").labels == ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3"]
    # a spreadsheet's "CSV UTF-8" starts with a byte-order mark; a row without a name is refused, with its line
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    assert load_pretrained(tmp_path / "as.pth", labels=str(csv)).labels[3] == "Child speech, kid speaking"
    csv.write_text("index,mid,display_name\n0,/m/a,Speech\n1,/m/b\n2,/m/c,Noise\n3,/m/d,Music\n")
    with pytest.raises(ValueError, match=f"^{csv}:3: no display_name$"):
        load_pretrained(tmp_path / "as.pth", labels=str(csv))


# ---- round trip: convert -> export-hf -> transformers --------------------------------------------------------------
def test_round_trip_through_transformers(tmp_path, randomize_torch, spectrogram, capsys):
    reference = hf_model(tmp_path / "hf", randomize_torch, max_length=128, num_labels=3,
                         id2label={0: "yes", 1: "no", 2: "up"}, label2id={"yes": 0, "no": 1, "up": 2})
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps(
        transformers.ASTFeatureExtractor(max_length=128, mean=-6.845978, std=5.5654526).to_dict()))
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "jax")]) == 0
    assert "3: yes, no, up" in capsys.readouterr().out
    assert main(["export-hf", str(tmp_path / "jax"), str(tmp_path / "back")]) == 0

    exported = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "back").eval()
    x = spectrogram(2, 128)
    assert np.abs(torch_logits(exported, x) - torch_logits(reference, x)).max() <= 1e-4
    assert exported.config.id2label == {0: "yes", 1: "no", 2: "up"}
    written, saved = load_file(tmp_path / "back" / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert written.keys() == saved.keys() and all(np.array_equal(written[k], saved[k]) for k in saved)
    extractor = transformers.ASTFeatureExtractor.from_pretrained(tmp_path / "back")
    assert (extractor.max_length, extractor.mean, extractor.std) == (128, -6.845978, 5.5654526)
    # an export written inside the ast-jax model folder is a model of its own, not a part of that folder
    assert main(["export-hf", str(tmp_path / "jax"), str(tmp_path / "jax" / "hf")]) == 0
    assert convert_source(tmp_path / "jax" / "hf").model.labels == ["yes", "no", "up"]


def test_export_of_original_eps_warns_and_stays_close(tmp_path, randomize_torch, spectrogram, capsys):
    original_pth(tmp_path / "sc.pth", randomize_torch, width=192, layers=2)
    model = load_pretrained(tmp_path / "sc.pth")
    with pytest.warns(UserWarning, match="one LayerNorm eps"):
        export_hf(model, tmp_path / "back")
    exported = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "back").eval()
    assert exported.config.layer_norm_eps == 1e-6
    x = spectrogram(2, 128)
    difference = np.abs(torch_logits(exported, x) - np.asarray(model.apply(x)[0])).max()
    assert 0 < difference < 1e-3  # only the head LayerNorm's eps moved, from 1e-5 to 1e-6
    assert main(["export-hf", str(tmp_path / "sc.pth"), str(tmp_path / "cli")]) == 0
    err = capsys.readouterr().err
    assert err.count("ast-jax export-hf: warning: ") == 1 and "one LayerNorm eps" in err, err


def test_activation_travels_as_problem_type(tmp_path, randomize_torch):
    """A softmax (cross-entropy) model exports as single-label, so transformers' pipeline scores it with softmax
    too, and reads back as softmax; sigmoid is multi-label both ways. Unset (the released checkpoints): sigmoid."""
    hf_model(tmp_path / "hf", randomize_torch, max_length=128, num_labels=3)
    released = load_pretrained(tmp_path / "hf")
    assert released.activation == "sigmoid"
    for activation, problem in (("softmax", "single_label_classification"), ("sigmoid", "multi_label_classification")):
        model = dataclasses.replace(released, activation=activation)
        export_hf(model, tmp_path / activation)
        assert json.loads((tmp_path / activation / "config.json").read_text())["problem_type"] == problem
        assert load_pretrained(tmp_path / activation).activation == activation
        exported = transformers.ASTForAudioClassification.from_pretrained(tmp_path / activation)
        assert exported.config.problem_type == problem


def test_export_warns_of_features_transformers_cannot_express(tmp_path, randomize_torch):
    hf_model(tmp_path / "hf", randomize_torch, max_length=128, num_labels=3)
    model = load_pretrained(tmp_path / "hf")
    model.features = model.features.replace(window="povey", low_freq=50.0)
    with pytest.warns(UserWarning, match=r"no option for low_freq=50.0, window='povey'"):
        export_hf(model, tmp_path / "back")
    model.features = model.features.replace(window="hanning", low_freq=20.0, sample_rate=8000)
    with pytest.warns(UserWarning, match=r"computes features at 8000 Hz as this model does only where torchaudio is "
                                         r"installed; without it, it frames every rate with 16 kHz's 400 and 160"):
        export_hf(model, tmp_path / "rate")
    with warnings.catch_warnings():  # an output refused: refused before any warning about what it would hold
        warnings.simplefilter("error")
        with pytest.raises(FileExistsError, match=r"output folder exists and is not empty; --overwrite "
                                                  r"\(overwrite=True in Python\) replaces it$"):
            export_hf(model, tmp_path / "rate")


def test_sharded_and_half_precision_hugging_face_folders(tmp_path, randomize_torch, spectrogram):
    reference = hf_model(tmp_path / "one", randomize_torch, max_length=128, num_labels=3)
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    x = spectrogram(2, 128)
    logits, _ = load_pretrained(tmp_path / "sharded").apply(x)
    assert np.abs(np.asarray(logits) - torch_logits(reference, x)).max() <= 1e-4

    # torch shards, as older transformers wrote them (transformers 5 writes safetensors only)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    state, weight_map = reference.state_dict(), {}
    for k, names in enumerate((list(state)[:len(state) // 2], list(state)[len(state) // 2:])):
        shard = f"pytorch_model-0000{k + 1}-of-00002.bin"
        torch.save({name: state[name] for name in names}, tmp_path / "bin" / shard)
        weight_map.update(dict.fromkeys(names, shard))
    (tmp_path / "bin" / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    logits, _ = load_pretrained(tmp_path / "bin").apply(x)
    assert np.abs(np.asarray(logits) - torch_logits(reference, x)).max() <= 1e-4

    for dtype in (torch.bfloat16, torch.float16):  # safetensors with BF16 or F16 tensors
        reference.to(dtype).save_pretrained(tmp_path / str(dtype))
        logits, _ = load_pretrained(tmp_path / str(dtype)).apply(x)
        assert np.abs(np.asarray(logits) - torch_logits(reference.float(), x)).max() <= 1e-4  # the rounded weights

    index = tmp_path / "sharded" / "model.safetensors.index.json"
    next((tmp_path / "sharded").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(ValueError, match=rf"^{re.escape(str(index))}: shard model-00002-of-\d+.safetensors is missing$"):
        load_pretrained(tmp_path / "sharded")


def test_a_new_head_starts_as_the_original_codes_does():
    """The original builds a new head as nn.Sequential(nn.LayerNorm(768), nn.Linear(768, labels)) at PyTorch's
    defaults: LayerNorm 1 and 0, Linear weight and bias uniform in +-1/sqrt(768)."""
    from ast_jax.convert import _fresh_head
    from ast_jax.model import ASTConfig

    config = ASTConfig.from_size("base384", num_labels=527)
    head = _fresh_head(config, 0)
    reference = torch.nn.Sequential(torch.nn.LayerNorm(768), torch.nn.Linear(768, 527))
    np.testing.assert_array_equal(head["head_norm"]["scale"], reference[0].weight.detach().numpy())
    np.testing.assert_array_equal(head["head_norm"]["bias"], reference[0].bias.detach().numpy())
    ours = {"kernel": np.asarray(head["head"]["kernel"]).T, "bias": np.asarray(head["head"]["bias"])}
    theirs = {"kernel": reference[1].weight.detach().numpy(), "bias": reference[1].bias.detach().numpy()}
    for name in ("kernel", "bias"):  # the same distribution: bounds, spread and centre
        assert ours[name].shape == theirs[name].shape
        bound = 1 / np.sqrt(768)
        assert np.abs(ours[name]).max() <= bound and np.abs(theirs[name]).max() <= bound
        assert ours[name].std() == pytest.approx(theirs[name].std(), rel=0.1 if name == "bias" else 0.01)
        assert abs(ours[name].mean()) < 0.1 * bound
    assert not np.array_equal(_fresh_head(config, 1)["head"]["kernel"], head["head"]["kernel"])


def test_num_labels_always_gives_a_new_head(tmp_path, randomize_torch):
    original_pth(tmp_path / "sc.pth", randomize_torch)  # 35 labels
    source, fresh = load_pretrained(tmp_path / "sc.pth"), load_pretrained(tmp_path / "sc.pth", num_labels=35)
    assert not np.allclose(source.params["head"]["kernel"], fresh.params["head"]["kernel"])
    assert fresh.labels[:2] == ["LABEL_0", "LABEL_1"] and source.labels[:2] == ["backward", "follow"]
    np.testing.assert_array_equal(source.params["block0"]["mlp"]["fc1"]["kernel"],
                                  fresh.params["block0"]["mlp"]["fc1"]["kernel"])


def test_hugging_face_folder_without_feature_settings_warns(tmp_path, randomize_torch, capsys):
    hf_model(tmp_path / "hf", randomize_torch, max_length=128, num_labels=3)
    (tmp_path / "hf" / "preprocessor_config.json").unlink(missing_ok=True)
    with pytest.warns(UserWarning, match=r"hf: no preprocessor_config.json; the features use ASTFeatureExtractor's "
                                         r"defaults \(AudioSet's mean -4.2677393"):
        model = load_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
    assert "ast-jax convert: warning: " in capsys.readouterr().err  # one line, not Python's warning format
    assert repr(model).startswith("Pretrained(2 blocks, width 64, 126,339 parameters") and len(repr(model)) < 300
    from ast_jax.pretrained import save_model

    with pytest.raises(TypeError, match=r"takes the folder first"):
        save_model(model, tmp_path / "reversed")
    save_model(tmp_path / "edited", model)  # an ast_jax.json that no longer describes the saved weights
    meta = json.loads((tmp_path / "edited" / "ast_jax.json").read_text())
    meta["model"]["hidden_size"] = 128
    (tmp_path / "edited" / "ast_jax.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"edited/params: parameter .* has shape \(64,\), but ast_jax.json "
                                         r"describes a model whose .* is \(128,\)"):
        load_model(tmp_path / "edited")
    meta["model"]["hidden_size"], meta["labels"] = 64, "LABEL_0"
    (tmp_path / "edited" / "ast_jax.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"ast_jax.json: labels must be a list of names, got str 'LABEL_0'"):
        load_model(tmp_path / "edited")
    run = tmp_path / "run"  # a training WORKDIR (its config.json is the training config) given for a model
    save_model(run / "best", model)
    (run / "model").symlink_to("best")
    (run / "config.json").write_text('{"batch_size": 8}')
    with pytest.raises(ValueError, match=f"^{run}: a training run's folder, not a model; give one of its models: "
                                         f"{run / 'model'}, {run / 'best'}$"):
        load_pretrained(run)
    started = tmp_path / "started"  # a run stopped before its first validation
    (started / "checkpoints").mkdir(parents=True)
    (started / "data.json").write_text("{}")
    (started / "config.json").write_text('{"batch_size": 8}')
    with pytest.raises(ValueError, match="started: a training run's folder, not a model; it has no model yet"):
        load_pretrained(started)
    with pytest.raises(TypeError, match=r"load_pretrained\(\) got an unexpected keyword argument 'max_lenght'; its "
                                        r"options are max_length, num_mel_bins"):
        load_pretrained(tmp_path / "hf", max_lenght=3)


def test_partly_prefixed_state_dict_converts(tmp_path, randomize_torch, spectrogram):
    reference = original_pth(tmp_path / "sc.pth", randomize_torch, prefix="")
    state = reference.state_dict()
    torch.save({("module." + k if i % 2 else k): v for i, (k, v) in enumerate(state.items())}, tmp_path / "mixed.pth")
    x = spectrogram(1, 128)
    np.testing.assert_array_equal(np.asarray(load_pretrained(tmp_path / "mixed.pth").apply(x)[0]),
                                  np.asarray(load_pretrained(tmp_path / "sc.pth").apply(x)[0]))


def test_original_geometry_from_its_table_and_the_hints(tmp_path, randomize_torch):
    """A table with a released geometry's patch count is read as that geometry (labels and statistics too) and
    then adapted to what was asked, even where the request has as many patches on another grid; a table of no
    released geometry is read as the hints describe it."""
    reference = original_pth(tmp_path / "sc.pth", randomize_torch)
    table = reference.state_dict()["v.pos_embed"].numpy()
    conversion = convert_source(tmp_path / "sc.pth", max_length=186, frequency_stride=16, time_stride=10)
    model = conversion.model  # 8 x 18 = 144 patches, as the released 12 x 12
    assert model.labels == LABELS_35 and model.features.mean == -6.845978
    np.testing.assert_allclose(model.params["pos_embed"], original_adaptation(table, (12, 12), (8, 18)), atol=1e-6)
    assert any("read as the released speech_commands geometry" in note for note in conversion.notes)
    model = load_pretrained(tmp_path / "sc.pth", max_length=130)  # the same 12 x 12 grid, longer input
    assert model.labels[0] == "backward" and (model.features.mean, model.features.target_length) == (-6.845978, 130)
    np.testing.assert_array_equal(model.params["pos_embed"], table)

    reference = original_pth(tmp_path / "own.pth", randomize_torch, labels=3, frames=200, stride=12)  # 10 x 16
    model = load_pretrained(tmp_path / "own.pth", max_length=200, frequency_stride=12, time_stride=12)
    assert (model.config.max_length, model.config.frequency_patches, model.config.time_patches) == (200, 10, 16)
    np.testing.assert_array_equal(model.params["pos_embed"], reference.state_dict()["v.pos_embed"].numpy())
    with pytest.raises(ValueError, match="a position table of 160 patches matches no released geometry"):
        load_pretrained(tmp_path / "own.pth")



@pytest.mark.filterwarnings("ignore:.*no preprocessor_config.json")
def test_original_trained_on_a_grid_with_a_released_patch_count(tmp_path, randomize_torch, spectrogram):
    """96 mel bins x 166 frames at stride 10 is a 9 x 16 grid, 144 patches as Speech Commands' 12 x 12: read as the
    released geometry unless trained_geometry says the options give the checkpoint's own input."""
    reference = original_pth(tmp_path / "own.pth", randomize_torch, labels=3, frames=166, bins=96)
    table = reference.state_dict()["v.pos_embed"].numpy()
    conversion = convert_source(tmp_path / "own.pth", max_length=166, num_mel_bins=96, trained_geometry=True)
    model = conversion.model
    assert (model.config.frequency_patches, model.config.time_patches) == (9, 16) and not conversion.notes
    np.testing.assert_array_equal(model.params["pos_embed"], table)
    x = spectrogram(2, 166, 96)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x))[0].numpy()
    assert np.abs(np.asarray(model.apply(x)[0]) - expected).max() <= 1e-5
    adapted = convert_source(tmp_path / "own.pth", max_length=166, num_mel_bins=96)  # without: a note says how
    assert any("add --trained-geometry" in note for note in adapted.notes)
    with pytest.raises(ValueError, match=r"own.pth: its position table has 144 patches, but 128 mel bins x 166 "
                                         r"frames at strides 10/10 make 12 x 16 = 192"):
        convert_source(tmp_path / "own.pth", max_length=166, trained_geometry=True)
    with pytest.raises(ValueError, match=r"own.pth: --trained-geometry needs the checkpoint's --max-length"):
        convert_source(tmp_path / "own.pth", trained_geometry=True)
    hf_model(tmp_path / "hf", randomize_torch, max_length=128, num_labels=3)
    with pytest.raises(ValueError, match=r"hf: trained_geometry \(--trained-geometry\) is for original .pth"):
        convert_source(tmp_path / "hf", max_length=128, trained_geometry=True)

# ---- adaptation, as the original code does it ---------------------------------------------------------------------
def original_adaptation(table, source_grid, target_grid):
    """The original AST's position-table move, re-stated in torch: time axis then frequency axis, middle crop
    when not longer, F.interpolate(bilinear, align_corners=False) when longer."""
    (f0, t0), (f1, t1) = source_grid, target_grid
    width = table.shape[-1]
    grid = torch.from_numpy(table[:, 2:]).transpose(1, 2).reshape(1, width, f0, t0)
    if t1 <= t0:
        grid = grid[:, :, :, t0 // 2 - t1 // 2: t0 // 2 - t1 // 2 + t1]
    else:
        grid = F.interpolate(grid, size=(f0, t1), mode="bilinear", align_corners=False)
    if f1 <= f0:
        grid = grid[:, :, f0 // 2 - f1 // 2: f0 // 2 - f1 // 2 + f1, :]
    else:
        grid = F.interpolate(grid, size=(f1, t1), mode="bilinear", align_corners=False)
    return np.concatenate([table[:, :2], grid.reshape(1, width, f1 * t1).transpose(1, 2).numpy()], axis=1)


@pytest.mark.parametrize("source_grid, target_grid", [
    ((12, 101), (12, 12)),  # AudioSet -> Speech Commands
    ((12, 101), (12, 50)),  # AudioSet -> ESC-50
    ((12, 101), (8, 64)),  # AudioSet 10/10 -> stride 16
    ((12, 101), (14, 150)),  # longer input and more mel bins: resized
    ((24, 24), (12, 101)),  # ImageNet -> AudioSet
    ((24, 24), (12, 12)),  # ImageNet -> Speech Commands
    ((24, 24), (30, 7)),
])
def test_position_table_adaptation_matches_original(source_grid, target_grid):
    table = np.random.default_rng(0).standard_normal((1, 2 + source_grid[0] * source_grid[1], 8)).astype(np.float32)
    np.testing.assert_allclose(adapt_position_table(table, source_grid, target_grid),
                               original_adaptation(table, source_grid, target_grid), atol=1e-6)


@pytest.mark.parametrize("length, size", [(101, 150), (24, 101), (101, 37), (5, 3)])
def test_linear_resize_is_torch_bilinear_without_antialiasing(length, size):
    values = np.random.default_rng(1).standard_normal((3, 1, length)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(values)[:, None], size=(1, size), mode="bilinear",
                             align_corners=False)[:, 0]
    np.testing.assert_allclose(values @ linear_resize_weights(length, size).T, expected.numpy(), atol=1e-6)


def test_audioset_checkpoint_to_speech_commands(tmp_path, randomize_torch):
    reference = original_pth(tmp_path / "as.pth", randomize_torch, labels=527, frames=1024)
    model = load_pretrained(tmp_path / "as.pth", max_length=128, num_labels=35, labels=LABELS_35)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    assert (model.config.max_length, model.config.num_labels, model.features.target_length) == (128, 35, 128)
    np.testing.assert_allclose(model.params["pos_embed"],
                               original_adaptation(state["v.pos_embed"], (12, 101), (12, 12)), atol=1e-6)
    np.testing.assert_array_equal(model.params["block0"]["mlp"]["fc1"]["kernel"], state["v.blocks.0.mlp.fc1.weight"].T)
    assert model.params["head"]["kernel"].shape == (64, 35) and model.labels[0] == "backward"


def test_imagenet_deit_initialisation(tmp_path, spectrogram):
    """A timm DeiT distilled checkpoint ({"model": state dict}, 24x24 grid, RGB kernel) as the original starts."""
    rng = np.random.default_rng(2)
    width = 64
    names = {"cls_token": (1, 1, width), "dist_token": (1, 1, width), "pos_embed": (1, 2 + 24 * 24, width),
             "patch_embed.proj.weight": (width, 3, 16, 16), "patch_embed.proj.bias": (width,),
             "norm.weight": (width,), "norm.bias": (width,), "head.weight": (1000, width), "head.bias": (1000,),
             "head_dist.weight": (1000, width), "head_dist.bias": (1000,)}
    for block_name, shape in {"norm1": (width,), "attn.qkv": (3 * width, width), "attn.proj": (width, width),
                              "norm2": (width,), "mlp.fc1": (4 * width, width), "mlp.fc2": (width, 4 * width)}.items():
        names[f"blocks.0.{block_name}.weight"] = shape
        names[f"blocks.0.{block_name}.bias"] = shape[:1]
    state = {name: torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) for name, shape in names.items()}
    torch.save({"model": state}, tmp_path / "deit.pth")

    conversion = convert_source(tmp_path / "deit.pth", max_length=128, num_labels=35)
    params = conversion.model.params
    kernel = state["patch_embed.proj.weight"].numpy()
    np.testing.assert_allclose(params["patch_embed"]["kernel"][..., 0, :], kernel.sum(1).transpose(1, 2, 0), atol=1e-6)
    np.testing.assert_array_equal(adapt_imagenet_kernel(kernel)[:, 0], kernel.sum(1))
    np.testing.assert_allclose(params["pos_embed"], original_adaptation(state["pos_embed"].numpy(), (24, 24),
                                                                        (12, 12)), atol=1e-6)
    assert params["head"]["kernel"].shape == (width, 35)
    assert conversion.dropped == ["head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]
    assert np.isfinite(np.asarray(conversion.model.apply(spectrogram(1, 128))[0])).all()


# ---- bad input ------------------------------------------------------------------------------------------------------
def test_bad_input_is_one_line_error(tmp_path, randomize_torch, capsys):
    original_pth(tmp_path / "good.pth", randomize_torch, width=192)  # a DeiT size: no warning about its heads
    state = torch.load(tmp_path / "good.pth", weights_only=True)
    cases = {}
    (tmp_path / "text.pth").write_text("config = {'a': 1}\n")  # 'c' is pickle's GLOBAL opcode: not code, text
    cases["text.pth"] = r"not a PyTorch checkpoint \(neither a zip archive nor a pickle\)$"
    (tmp_path / "empty.pth").write_bytes(b"")
    cases["empty.pth"] = "empty file, not a checkpoint"
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "good.pth").read_bytes()[:5000])
    cases["truncated.pth"] = r"not a PyTorch checkpoint \(a truncated or corrupt zip archive\)$"
    (tmp_path / "zip_magic.pth").write_bytes(b"PK\x03\x04 and then no archive")
    cases["zip_magic.pth"] = r"not a PyTorch checkpoint \(a truncated or corrupt zip archive\)$"
    (tmp_path / "bad_pickle.pth").write_bytes(b"\x80\x02\xff\xfe junk")
    cases["bad_pickle.pth"] = r"not a PyTorch checkpoint \(a pickle torch.save did not write, or a corrupt one\)$"
    (tmp_path / "plain.pth").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    cases["plain.pth"] = r"not a PyTorch checkpoint \(a pickle torch.save did not write, or a corrupt one\)$"
    with zipfile.ZipFile(tmp_path / "good.pth") as archive:  # flip a byte inside the pos_embed tensor's data
        record = next(info for info in archive.infolist() if info.file_size == 146 * 192 * 4)
    flipped = bytearray((tmp_path / "good.pth").read_bytes())
    start = record.header_offset + 30 + len(record.filename.encode()) + len(record.extra) + 8
    flipped[start] ^= 0x40
    (tmp_path / "flipped.pth").write_bytes(bytes(flipped))
    cases["flipped.pth"] = rf"not a PyTorch checkpoint \(corrupt: {re.escape(record.filename)} fails its checksum\)$"
    torch.save({k: (v * 100).long() for k, v in state.items()}, tmp_path / "integers.pth")
    cases["integers.pth"] = "entry 'module.v.cls_token' is not a floating-point tensor"
    torch.save({**state, "module.v.cls_token": state["module.v.cls_token"].to(torch.complex64)}, tmp_path / "complex.pth")
    cases["complex.pth"] = "entry 'module.v.cls_token' is not a floating-point tensor"
    torch.save({}, tmp_path / "no_tensors.pth")
    cases["no_tensors.pth"] = "holds no tensors"
    torch.save({**state, "module.v.blocks.0.norm2.bias": torch.full((192,), float("nan"))}, tmp_path / "nan.pth")
    cases["nan.pth"] = "tensor v.blocks.0.norm2.bias holds NaN or infinite values"
    torch.save({**state, "module.v.pos_embed": state["module.v.pos_embed"][0]}, tmp_path / "flat_table.pth")
    cases["flat_table.pth"] = r"tensor v.pos_embed has shape \(146, 192\), not \(1, patches \+ 2, width\)"
    save_file({k: v.numpy() for k, v in state.items()}, tmp_path / "good.safetensors")
    (tmp_path / "truncated.safetensors").write_bytes((tmp_path / "good.safetensors").read_bytes()[:5000])
    cases["truncated.safetensors"] = "not a readable safetensors file"
    torch.save({k: v for k, v in state.items() if k != "module.v.blocks.0.mlp.fc2.bias"}, tmp_path / "missing.pth")
    cases["missing.pth"] = "missing tensors: v.blocks.0.mlp.fc2.bias"
    torch.save({**state, "module.v.extra": torch.zeros(3)}, tmp_path / "unexpected.pth")
    cases["unexpected.pth"] = "unexpected tensors: v.extra"
    torch.save({**state, "module.v.blocks.0.attn.proj.weight": torch.zeros(192, 191)}, tmp_path / "shape.pth")
    cases["shape.pth"] = r"v.blocks.0.attn.proj.weight has shape \(192, 191\), the model expects \(192, 192\)"
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    cases["list.pth"] = "not a floating-point tensor"

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"module.v.cls_token": Exploit()}, tmp_path / "code.pth")
    cases["code.pth"] = r"refused: it refers to Python code or classes, not only tensors; nothing was run\)$"
    # torch's weights-only reader stops at protocol 4's first opcode (FRAME): a checkpoint saved with it, or an
    # exploit, is refused as such (not "corrupt"), without torch's two-line warning
    torch.save(state, tmp_path / "protocol4.pth", pickle_protocol=4)
    (tmp_path / "code4.pth").write_bytes(pickle.dumps({"state_dict": Exploit()}, protocol=4))
    for name in ("protocol4.pth", "code4.pth"):
        cases[name] = (r": pickle protocol 4\+ \(opcode 149\), beyond torch's weights-only loader; nothing was run; "
                       r"re-save it with protocol 2$")
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n0,/m/a,yes\n1,/m/b,no\n")

    for name, problem in cases.items():
        output = tmp_path / f"out-{name}"
        assert main(["convert", str(tmp_path / name), str(output)]) == 1, name
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and str(tmp_path / name) in error, error
        assert len(error) < len(str(tmp_path / name)) + 160, error  # the problem, not torch's advice
        assert re.search(problem, error), error
        assert not output.exists() and not list(tmp_path.glob(f".out-{name}*"))
    assert not marker.exists()

    assert main(["convert", str(tmp_path / "good.pth"), str(tmp_path / "out"), "--labels",
                 str(tmp_path / "labels.csv")]) == 1
    error = capsys.readouterr().err
    assert "labels.csv: 2 labels for a head with 35 outputs" in error and error.count("\n") == 1
    (tmp_path / "a_file").write_text("mine")
    assert main(["convert", str(tmp_path / "good.pth"), str(tmp_path / "a_file")]) == 1
    error = capsys.readouterr().err
    assert f"{tmp_path / 'a_file'}: exists and is not a folder" in error and error.count("\n") == 1
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine").write_text("mine")
    converted = []
    with pytest.MonkeyPatch.context() as patch:  # an occupied output is refused before the (long) conversion
        patch.setattr("ast_jax.convert.convert_source", lambda *args, **kwargs: converted.append(args))
        assert main(["convert", str(tmp_path / "good.pth"), str(tmp_path / "taken")]) == 1
    error = capsys.readouterr().err
    assert converted == [] and "taken: output folder exists and is not empty; --overwrite" in error, error
    assert (tmp_path / "a_file").read_text() == "mine"
    assert main(["convert", str(tmp_path / "nowhere.pth"), str(tmp_path / "out")]) == 1
    assert "nowhere.pth: no such file" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "good.pth"), str(tmp_path / "out"), "--labels",
                 str(tmp_path / "nowhere.csv")]) == 1
    assert f"{tmp_path / 'nowhere.csv'}: label CSV not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["convert", str(tmp_path / "good.pth"), ""]) == 1
    assert capsys.readouterr().err.endswith("OUTPUT_DIR is empty: name the model folder to write\n")


def test_malformed_configs_are_one_line_errors(tmp_path, randomize_torch, capsys):
    hf_model(tmp_path / "hf", randomize_torch, max_length=128, num_labels=3)
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps({"max_length": 128}))
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "jax")]) == 0
    capsys.readouterr()
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    meta = json.loads((tmp_path / "jax" / "ast_jax.json").read_text())
    cases = [  # (folder, file, new content, what the error says after "FILE: ")
        ("hf", "config.json", [1, 2], "not a transformers config (a JSON object expected)"),
        ("hf", "config.json", {**hf_config, "hidden_size": "64"}, "hidden_size must be a positive integer, got '64'"),
        ("hf", "config.json", {**hf_config, "layer_norm_eps": None}, "layer_norm_eps must be a positive number"),
        ("hf", "config.json", {**hf_config, "id2label": ["a", "b"]}, "id2label must map indices to names"),
        ("hf", "config.json", {**hf_config, "id2label": {"0": "a", "1": "b", "7": "c"}},
         "id2label keys must run 0..2; it has 0, 1, 7"),
        ("hf", "config.json", {**hf_config, "id2label": {"0": "a", "1": "b"}},
         f"id2label names 2 labels, but the head in {tmp_path / 'broken-hf' / 'model.safetensors'} has 3 outputs"),
        ("hf", "config.json", {k: v for k, v in hf_config.items() if k not in ("id2label", "label2id", "num_labels")},
         "has no id2label or num_labels, so transformers' default of 2 labels, but the head in"),
        ("hf", "preprocessor_config.json", [], "not a feature extractor config (a JSON object expected)"),
        ("hf", "preprocessor_config.json", {"max_length": "long"}, "invalid literal"),
        ("jax", "ast_jax.json", {k: v for k, v in meta.items() if k != "model"}, "no 'model' entry"),
        ("jax", "ast_jax.json", {**meta, "version": 2}, "format version 2; this ast-jax reads version 1"),
        ("jax", "ast_jax.json", {**meta, "model": {**meta["model"], "depth": 3}}, "unknown ASTConfig fields: depth"),
        ("jax", "ast_jax.json", {**meta, "labels": ["one"]}, "1 labels given for a head with 3 outputs"),
    ]
    for folder, name, content, problem in cases:
        broken = tmp_path / f"broken-{folder}"
        if broken.exists():
            subprocess.run(["rm", "-r", str(broken)], check=True)
        subprocess.run(["cp", "-r", str(tmp_path / folder), str(broken)], check=True)
        (broken / name).write_text(json.dumps(content))
        assert main(["convert", str(broken), str(tmp_path / "out")]) == 1, (name, content)
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"{broken / name}: {problem}" in error, error
        assert not (tmp_path / "out").exists()
    pre = tmp_path / "broken-pre"
    subprocess.run(["cp", "-r", str(tmp_path / "hf"), str(pre)], check=True)
    (pre / "preprocessor_config.json").write_text(json.dumps({"max_length": 1024}))
    assert main(["convert", str(pre), str(tmp_path / "out")]) == 1
    assert f"{pre}: features give 1024 frames x 128 bins but the model expects 128 x 128" in capsys.readouterr().err
    # weights that do not fit the config.json beside them: the error names the config as well as the weights
    for name, change, problem in (("layers", {"num_hidden_layers": 3}, "missing tensors: "),
                                  ("frames", {"max_length": 1024}, "position_embeddings has shape (1, 146, 64), ")):
        edited = tmp_path / f"broken-{name}"
        subprocess.run(["cp", "-r", str(tmp_path / "hf"), str(edited)], check=True)
        (edited / "config.json").write_text(json.dumps({**hf_config, **change}))
        assert main(["convert", str(edited), str(tmp_path / "out")]) == 1
        error = capsys.readouterr().err
        assert f"{edited / 'model.safetensors'}: " in error and problem in error, error
        assert f"the model {edited / 'config.json'} describes" in error and error.count("\n") == 1, error


def test_output_through_a_link_with_a_normal_mode(tmp_path, randomize_torch):
    original_pth(tmp_path / "sc.pth", randomize_torch)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    previous = os.umask(0o022)
    try:
        assert main(["convert", str(tmp_path / "sc.pth"), str(tmp_path / "link")]) == 0
        assert main(["convert", str(tmp_path / "sc.pth"), str(tmp_path / "link"), "--overwrite"]) == 0
        assert main(["export-hf", str(tmp_path / "link"), str(tmp_path / "hf")]) == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "ast_jax.json").is_file()
    assert (tmp_path / "real").stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0o700
    assert (tmp_path / "hf").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "link", "real", "sc.pth"]


def test_interrupted_save_leaves_nothing(tmp_path, randomize_torch, monkeypatch, capsys):
    """Ctrl-C while Orbax writes is held until the write ends, then the staging folder goes and the command stops
    with 130: no half-written model, no orphaned temporary folder, no tracebacks from Orbax's threads."""
    import signal

    import orbax.checkpoint as ocp

    original_pth(tmp_path / "sc.pth", randomize_torch, width=192)
    save = ocp.StandardCheckpointer.save
    finished = []

    def interrupted_save(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the parameters are being written
        save(self, *args, **kwargs)
        self.wait_until_finished()
        finished.append(True)

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", interrupted_save)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's Ctrl-C, whatever ran before
    try:
        code = main(["convert", str(tmp_path / "sc.pth"), str(tmp_path / "out")])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert code == 130, f"SIGINT handler before the test: {before!r}"
    assert finished and capsys.readouterr().err == "ast-jax: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sc.pth"]


# ---- a converted folder needs no torch -----------------------------------------------------------------------------
def test_converted_folder_loads_without_torch(tmp_path, randomize_torch):
    original_pth(tmp_path / "sc.pth", randomize_torch)
    assert main(["convert", str(tmp_path / "sc.pth"), str(tmp_path / "model")]) == 0
    expected = np.asarray(load_model(tmp_path / "model").apply(np.ones((1, 128, 128), np.float32))[0])
    np.save(tmp_path / "expected.npy", expected)
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np, ast_jax
model = ast_jax.load_pretrained({str(tmp_path / 'model')!r})
logits, _ = model.apply(np.ones((1, 128, 128), np.float32))
assert np.abs(np.asarray(logits) - np.load({str(tmp_path / 'expected.npy')!r})).max() == 0
assert model.labels[0] == "backward" and "transformers" not in sys.modules
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# ---- the released Speech Commands model (network; opt in with AST_JAX_ONLINE_TESTS=1) ------------------------------
@pytest.mark.online
def test_published_speech_commands_logits():
    """MIT/ast-finetuned-speech-commands-v2 on the first clip of the HF speech_commands v0.02 validation split,
    features from transformers' ASTFeatureExtractor: logits[0, :3] as published."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError:
        pytest.skip("huggingface.co is not reachable")
    pq = pytest.importorskip("pyarrow.parquet")
    import io

    import soundfile
    from huggingface_hub import HfFileSystem

    # The hub's parquet export of the dataset; only the first row group is read.
    shard = "datasets/google/speech_commands@refs%2Fconvert%2Fparquet/v0.02/validation/0000.parquet"
    with HfFileSystem().open(shard) as handle:
        row = pq.ParquetFile(handle).read_row_group(0, columns=["audio", "file"]).slice(0, 1).to_pylist()[0]
    assert row["file"].startswith("backward/")
    waveform, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
    extractor = transformers.ASTFeatureExtractor(mean=-6.845978, std=5.5654526, max_length=128)
    x = extractor(waveform, sampling_rate=rate, return_tensors="np")["input_values"]

    model = load_pretrained("hf:MIT/ast-finetuned-speech-commands-v2")
    logits, _ = model.apply(x)
    np.testing.assert_allclose(np.asarray(logits)[0, :3], [6.1589, -8.0566, -8.7984], atol=1e-4)
    assert model.labels[int(np.argmax(logits[0]))] == "backward"
    assert model.labels == LABELS_35  # the released head's order, as ast_jax.data.speech_commands writes it


def test_an_output_under_a_file_is_one_line(tmp_path, randomize_torch, capsys):
    hf_model(tmp_path / "hf", randomize_torch, max_length=128, num_labels=3)
    transformers.ASTFeatureExtractor(max_length=128).save_pretrained(tmp_path / "hf")
    (tmp_path / "afile").write_text("mine")
    capsys.readouterr()  # transformers' own progress output while saving
    for command in (["convert", str(tmp_path / "hf")], ["export-hf", str(tmp_path / "hf")]):
        assert main([*command, str(tmp_path / "afile" / "out")]) == 1
        err = capsys.readouterr().err
        assert err.endswith(f"{tmp_path / 'afile' / 'out'}: cannot be written ({tmp_path / 'afile'} is a file)\n")
        assert err.count("\n") == 1 and (tmp_path / "afile").read_text() == "mine"


def test_an_output_that_is_or_holds_the_source_is_refused_even_with_overwrite(tmp_path, randomize_torch, capsys):
    hf_model(tmp_path / "models" / "hf", randomize_torch, max_length=128, num_labels=3)
    transformers.ASTFeatureExtractor(max_length=128).save_pretrained(tmp_path / "models" / "hf")
    assert main(["convert", str(tmp_path / "models" / "hf"), str(tmp_path / "models" / "ours")]) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "models").rglob("*") if p.is_file()}
    capsys.readouterr()
    for command, source, output, relation in (
            ("convert", "hf", "hf", "is"), ("convert", "hf", ".", "holds"),
            ("export-hf", "ours", "ours", "is"), ("export-hf", "ours/", ".", "holds")):
        source, output = str(tmp_path / "models" / source), str(tmp_path / "models" / output)
        assert main([command, source, output, "--overwrite"]) == 1
        assert capsys.readouterr().err == (f"ast-jax {command}: error: {output}: {relation} the source {source}; "
                                           f"write the output elsewhere\n")
    assert {p: p.read_bytes() for p in (tmp_path / "models").rglob("*") if p.is_file()} == before


def test_hub_ids_without_the_prefix_and_an_unreachable_hub_get_one_line(tmp_path, monkeypatch):
    """`MIT/ast-...` as transformers takes it is no path here: the message says to write `hf:`. Offline, with the
    model not in the cache, huggingface_hub's paragraph ("Got: ...") becomes one line saying what to do."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^MIT/ast-x-0\.4593: no such file or folder \(a Hugging Face "
                                                 r"model\? write hf:MIT/ast-x-0\.4593\)$"):
        load_pretrained("MIT/ast-x-0.4593")
    for path in ("models/sc.pth", "./sc", "/nowhere/sc", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="no such file or folder$"):
            load_pretrained(path)
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ValueError) as caught:
        load_pretrained("hf:MIT/ast-x-0.4593")
    assert str(caught.value) == (
        "hf:MIT/ast-x-0.4593: cannot download: the hub cannot be reached (HF_HUB_OFFLINE is set) and the model is "
        "not in the local Hugging Face cache; give a downloaded folder or .pth instead")
