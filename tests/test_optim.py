"""The recipe's optimiser, schedule, loss and metrics against their PyTorch / scikit-learn references.

- the learning rate equals torch's MultiStepLR (stepped once per epoch, as the original traintest.py) at every
  epoch of a 30-epoch run, for the Speech Commands and both AudioSet schedules, and the AudioSet warmup;
- three ast-jax update steps from the same weights and batches give the same losses and parameters as
  transformers' ASTForAudioClassification + torch.optim.Adam(weight_decay=5e-7, betas=(0.95, 0.999)) + MultiStepLR;
- accuracy, AP and AUC equal scikit-learn's; config overrides refuse unknown fields and wrong types.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from ast_jax.training.config_io import apply_overrides, expand_user_paths
from ast_jax.training.metrics import average_precision, classification_metrics, roc_auc
from ast_jax.training.optim import make_optimizer, make_schedule
from ast_jax.training.trainer import default_config, make_train_step, step_compiler_options


def optim_config(**changes):
    config = default_config()
    config.optim.update(changes)
    return config


def torch_epoch_rates(lr, start, every, gamma, epochs, steps_per_epoch, warmup_steps=0):
    """Learning rate of every optimiser step, as the original loop sets it: warmup every 50 steps up to
    step `warmup_steps` (1000), MultiStepLR(range(start, 1000, every)) stepped after each epoch."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(range(start, 1000, every)), gamma=gamma)
    rates, step = [], 0
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            if warmup_steps and step <= warmup_steps and step % 50 == 0:
                for group in optimizer.param_groups:
                    group["lr"] = step / warmup_steps * lr
            rates.append(optimizer.param_groups[0]["lr"])
            step += 1
        scheduler.step()
    return np.array(rates)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
@pytest.mark.parametrize("lr,start,every,gamma", [
    (2.5e-4, 5, 1, 0.85),  # Speech Commands and ESC-50
    (1e-5, 2, 1, 0.5),  # full AudioSet
    (5e-5, 10, 5, 0.5),  # balanced AudioSet
])
def test_schedule_equals_multisteplr_every_epoch(lr, start, every, gamma):
    steps_per_epoch, epochs = 7, 30
    config = optim_config(learning_rate=lr, lr_decay_start=start, lr_decay_every=every, lr_decay_rate=gamma)
    schedule = make_schedule(config.optim, steps_per_epoch)
    expected = torch_epoch_rates(lr, start, every, gamma, epochs, steps_per_epoch)
    ours = np.array([schedule(s) for s in range(epochs * steps_per_epoch)], np.float64)
    # optax computes in float32: 0.85 itself is rounded (relative 2e-8) and the power over up to 25 decays
    # compounds it; torch multiplies Python floats. Measured worst relative difference: 7.5e-7.
    np.testing.assert_allclose(ours, expected, rtol=1.5e-6)
    # the documented SC numbers: epochs 1-5 at 2.5e-4, epoch 6 at 2.125e-4
    if start == 5:
        assert ours[4 * steps_per_epoch] == pytest.approx(2.5e-4) and ours[5 * steps_per_epoch] == pytest.approx(2.125e-4)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
def test_warmup_equals_original_loop():
    steps_per_epoch, epochs = 1200, 5  # warmup (1000 steps) ends inside epoch 1, as in the AudioSet runs
    config = optim_config(learning_rate=1e-5, lr_decay_start=2, lr_decay_every=1, lr_decay_rate=0.5,
                          warmup_steps=1000)
    schedule = jax.jit(jax.vmap(make_schedule(config.optim, steps_per_epoch)))
    ours = np.asarray(schedule(jnp.arange(epochs * steps_per_epoch)), np.float64)
    expected = torch_epoch_rates(1e-5, 2, 1, 0.5, epochs, steps_per_epoch, warmup_steps=1000)
    np.testing.assert_allclose(ours, expected, rtol=1.5e-6, atol=1e-13)
    assert ours[0] == 0 and ours[49] == 0 and ours[50] == pytest.approx(5e-7)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
@pytest.mark.parametrize("steps_per_epoch,warmup_steps,every", [(300, 1000, 1), (130, 1000, 2), (300, 1030, 1)])
def test_warmup_spanning_decays_equals_original_loop(steps_per_epoch, warmup_steps, every):
    """A small data set: the 1000 warmup steps span decays, which each warmup update undid in the original loop
    (and 1030: a warmup whose last update, at step 1000, stops short of the full rate)."""
    epochs = 8
    config = optim_config(learning_rate=1e-5, lr_decay_start=2, lr_decay_every=every, lr_decay_rate=0.5,
                          warmup_steps=warmup_steps)
    schedule = jax.jit(jax.vmap(make_schedule(config.optim, steps_per_epoch)))
    ours = np.asarray(schedule(jnp.arange(epochs * steps_per_epoch)), np.float64)
    expected = torch_epoch_rates(1e-5, 2, every, 0.5, epochs, steps_per_epoch, warmup_steps=warmup_steps)
    np.testing.assert_allclose(ours, expected, rtol=1.5e-6, atol=1e-13)


def apply_updates(optimizer, start, grads):
    """Parameters after running `optimizer` from `start` through the gradient sequence `grads`."""
    params, state = jnp.asarray(start), optimizer.init(jnp.asarray(start))
    for g in grads:
        updates, state = optimizer.update(jnp.asarray(g), state, params)
        params = params + updates
    return params


def test_optimizer_is_torch_adam_with_coupled_l2():
    steps_per_epoch, steps = 2, 13  # crosses several epoch boundaries and decays
    config = optim_config(learning_rate=1e-2, lr_decay_start=2, lr_decay_rate=0.5, weight_decay=5e-3)
    optimizer, _ = make_optimizer(config, steps_per_epoch)
    rng = np.random.default_rng(0)
    start = rng.standard_normal((5, 3)).astype(np.float32)
    grads = rng.standard_normal((steps, 5, 3)).astype(np.float32)

    params = apply_updates(optimizer, start, grads)

    weight = torch.nn.Parameter(torch.tensor(start))
    torch_opt = torch.optim.Adam([weight], lr=1e-2, weight_decay=5e-3, betas=(0.95, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(torch_opt, list(range(2, 1000)), gamma=0.5)
    for i, g in enumerate(grads):
        weight.grad = torch.tensor(g)
        torch_opt.step()
        if (i + 1) % steps_per_epoch == 0:
            scheduler.step()
    # float32 on both sides, different operation order: a 13-step difference of 4e-7 is 4e-5 of one lr step.
    np.testing.assert_allclose(np.asarray(params), weight.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_cosine_schedule_equals_torch_warmup_then_cosine_annealing():
    steps_per_epoch, epochs, warmup = 7, 6, 10
    config = optim_config(learning_rate=2e-3, lr_schedule="cosine", min_lr_ratio=0.05, warmup_steps=warmup,
                          warmup_update_every=1)
    config.num_epochs = epochs
    _, schedule = make_optimizer(config, steps_per_epoch)
    total = epochs * steps_per_epoch
    ours = np.asarray(jax.vmap(schedule)(jnp.arange(total)), np.float64)

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: s / warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=2e-3 * 0.05),
    ], milestones=[warmup])
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(ours, expected, rtol=2e-6, atol=1e-12)
    assert ours[warmup] == pytest.approx(2e-3) and ours[-1] > 2e-3 * 0.05


def test_decoupled_weight_decay_is_torch_adamw():
    steps = 9
    config = optim_config(learning_rate=1e-2, weight_decay=0.1, decoupled_weight_decay=True, lr_schedule="cosine")
    config.num_epochs = 3
    optimizer, _ = make_optimizer(config, steps_per_epoch=3)
    rng = np.random.default_rng(1)
    start = rng.standard_normal((4, 3)).astype(np.float32)
    grads = rng.standard_normal((steps, 4, 3)).astype(np.float32)
    params = apply_updates(optimizer, start, grads)

    weight = torch.nn.Parameter(torch.tensor(start))
    torch_opt = torch.optim.AdamW([weight], lr=1e-2, weight_decay=0.1, betas=(0.95, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=steps)
    for g in grads:
        weight.grad = torch.tensor(g)
        torch_opt.step()
        scheduler.step()
    np.testing.assert_allclose(np.asarray(params), weight.detach().numpy(), rtol=1e-6, atol=1e-6)
    # coupled L2 (the default) would end elsewhere: the option changes the update
    coupled, _ = make_optimizer(optim_config(learning_rate=1e-2, weight_decay=0.1, lr_schedule="cosine"), 3)
    assert np.abs(np.asarray(apply_updates(coupled, start, grads)) - np.asarray(params)).max() > 1e-4


def test_unknown_lr_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        make_optimizer(optim_config(lr_schedule="linear"), 3)


def test_multistep_fields_are_checked_only_for_the_multistep_schedule():
    with pytest.raises(ValueError, match=r"optim.lr_decay_start \(0\) must be >= optim.lr_decay_every \(1\)"):
        make_schedule(optim_config(lr_decay_start=0).optim, 3, 30)
    cosine = make_schedule(optim_config(lr_schedule="cosine", lr_decay_start=0, learning_rate=1.0).optim, 3, 30)
    assert float(cosine(0)) == 1.0 and float(cosine(15)) == pytest.approx(0.5) and float(cosine(30)) == 0.0


@pytest.mark.parametrize("loss_name", ["bce", "ce"])
def test_three_steps_match_transformers_and_torch_adam(loss_name, randomize_torch):
    """Same random weights, same input_values batches, the last one padded (two of its four rows are padding, which
    torch never sees): losses, gradient norms and every parameter, for BCE (mean over batch x classes, soft
    mixup-like targets) and the original recipes' CrossEntropyLoss on the targets' argmax (one-hot targets)."""
    from transformers import ASTConfig as HFConfig, ASTForAudioClassification

    from ast_jax.convert import detect_format, state_to_params
    from ast_jax.model import AST, ASTConfig

    torch.manual_seed(0)
    hf_config = HFConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                         patch_size=16, frequency_stride=10, time_stride=10, max_length=48, num_mel_bins=32,
                         num_labels=5, layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    torch_model = randomize_torch(ASTForAudioClassification(hf_config)).train()
    state = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
    config = ASTConfig(hidden_size=64, num_layers=2, num_heads=4, frequency_stride=10, time_stride=10,
                       num_mel_bins=32, max_length=48, num_labels=5, layer_norm_eps=1e-12,
                       head_layer_norm_eps=1e-12, model_size="tiny224")
    params = jax.tree_util.tree_map(jnp.asarray, state_to_params(state, detect_format(state, "hf"), config, "hf"))

    steps_per_epoch, rng = 1, np.random.default_rng(1)  # one step per epoch: the decay acts between steps
    train_config = optim_config(learning_rate=1e-3, lr_decay_start=1, lr_decay_rate=0.85)
    optimizer, schedule = make_optimizer(train_config, steps_per_epoch)
    step = jax.jit(make_train_step(AST(config), optimizer, schedule, loss_name,
                                   lambda _, batch: (batch["audio"], batch["targets"]), jax.random.PRNGKey(0)),
                   donate_argnums=0, compiler_options=step_compiler_options(jax.default_backend()))  # as the trainer
    batches = [(rng.standard_normal((4, 48, 32)).astype(np.float32),
                rng.uniform(size=(4, 5)).astype(np.float32)) for _ in range(3)]  # soft (mixup-like) targets
    if loss_name == "ce":
        batches = [(inputs, np.eye(5, dtype=np.float32)[rng.integers(0, 5, 4)]) for inputs, _ in batches]
    valid = [np.ones(4, bool), np.ones(4, bool), np.array([True, True, False, False])]
    batches[2][0][2:] *= 100.0  # padding rows that counted would move the loss and the gradient far

    jax_state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
    jax_losses, jax_norms = [], []
    for (inputs, targets), rows in zip(batches, valid):
        jax_state, metrics = step(jax_state, {"audio": inputs, "targets": targets, "valid": rows})
        jax_losses.append(float(metrics["loss"]))
        jax_norms.append(float(metrics["grad_norm"]))

    torch_opt = torch.optim.Adam(torch_model.parameters(), lr=1e-3, weight_decay=5e-7, betas=(0.95, 0.999))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(torch_opt, list(range(1, 1000)), gamma=0.85)
    torch_losses, torch_norms = [], []
    for (inputs, targets), rows in zip(batches, valid):  # torch gets the short batch without its padding
        torch_opt.zero_grad()
        logits, targets = torch_model(torch.tensor(inputs[rows])).logits, torch.tensor(targets[rows])
        if loss_name == "bce":
            loss = torch.nn.BCEWithLogitsLoss()(logits, targets)
        else:
            loss = torch.nn.CrossEntropyLoss()(logits, targets.argmax(dim=1))
        loss.backward()
        torch_norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in torch_model.parameters()])))
        torch_opt.step()
        scheduler.step()
        torch_losses.append(loss.item())

    np.testing.assert_allclose(jax_losses, torch_losses, rtol=1e-5)
    np.testing.assert_allclose(jax_norms, torch_norms, rtol=1e-4)
    after = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    expected = state_to_params(after, detect_format(after, "hf"), config, "hf")
    width = config.hidden_size
    worst = 0.0
    for path, value in jax.tree_util.tree_leaves_with_path(jax_state["params"]):
        value, reference = np.asarray(value), np.asarray(_at(expected, path))
        if path[-2:] == (jax.tree_util.DictKey("qkv"), jax.tree_util.DictKey("bias")):
            # The key bias adds the same number to every logit of a query, which softmax ignores: its true
            # gradient is zero, and Adam scales the float rounding noise both sides get instead up to a full
            # step of arbitrary sign. Only its query and value parts are determined.
            value, reference = np.delete(value, np.s_[width:2 * width]), np.delete(reference, np.s_[width:2 * width])
        worst = max(worst, float(np.max(np.abs(value - reference))))
        # Adam moves each weight by about lr (1e-3) per step whatever the gradient's size, so the tolerance is
        # set against that step: 1e-5 is 1% of one step (measured worst: 2.3e-6 with BCE, 5.1e-6 with CE; a
        # learning rate off by one decay, or padding rows counted, moves weights by 1e-4 and more).
        np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-5, err_msg=str(path))
    print(f"max |param difference| after 3 steps: {worst:.2e}; losses {jax_losses} vs {torch_losses}")


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are CPU's")
def test_step_compiler_options_remove_the_parameter_copies_and_nothing_else():
    """With the state donated, XLA's default copy insertion copies every parameter before the update; the
    trainer's CPU options (region analysis) compile the same step without copies, to the same bits."""
    import re

    from ast_jax.model import AST, ASTConfig, init_params

    config = ASTConfig.from_size("tiny224", num_layers=2, max_length=48, num_mel_bins=32, num_labels=5)
    params = init_params(config, 0)
    optimizer, schedule = make_optimizer(default_config(), 10)
    step_fn = make_train_step(AST(config), optimizer, schedule, "bce", lambda _, b: (b["audio"], b["targets"]),
                              jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batches = [{"audio": rng.standard_normal((4, 48, 32)).astype(np.float32),
                "targets": (rng.uniform(size=(4, 5)) < 0.3).astype(np.float32), "valid": np.ones(4, bool)}
               for _ in range(3)]
    results = {}
    for name, options in (("default", {}), ("trainer", step_compiler_options("cpu"))):
        step = jax.jit(step_fn, donate_argnums=0, compiler_options=options)
        state = jax.tree_util.tree_map(jnp.array, {"params": params, "opt_state": optimizer.init(params),
                                                   "step": jnp.zeros((), jnp.int32)})
        hlo = step.lower(state, batches[0]).compile().as_text()
        copies = len(re.findall(r" copy\(", hlo[hlo.index("ENTRY"):]))
        losses = []
        for batch in batches:
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        results[name] = (copies, losses, jax.tree_util.tree_leaves(state))
    assert results["default"][0] > 0  # parameter copies (all 100 of AST-base's parameters at batch 8)
    assert results["trainer"][0] == 0
    assert results["trainer"][1] == results["default"][1]
    for ours, default in zip(results["trainer"][2], results["default"][2]):
        np.testing.assert_array_equal(ours, default)


def test_metrics_equal_scikit_learn():
    from sklearn import metrics

    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(size=(200, 6)), 2)  # rounding makes ties, which both must treat alike
    targets = (rng.uniform(size=(200, 6)) < 0.3).astype(np.float32)
    for k in range(6):
        assert average_precision(scores[:, k], targets[:, k]) == pytest.approx(
            metrics.average_precision_score(targets[:, k], scores[:, k]), abs=1e-12)
        assert roc_auc(scores[:, k], targets[:, k]) == pytest.approx(
            metrics.roc_auc_score(targets[:, k], scores[:, k]), abs=1e-12)
    result = classification_metrics(scores, targets)
    top_is_a_label = [targets[i, k] == 1 for i, k in enumerate(scores.argmax(1))]
    assert result["accuracy"] == pytest.approx(np.mean(top_is_a_label))
    one_hot = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 200)]  # single-label: the original's accuracy
    assert classification_metrics(scores, one_hot)["accuracy"] == pytest.approx(
        metrics.accuracy_score(one_hot.argmax(1), scores.argmax(1)))
    assert result["mAP"] == pytest.approx(metrics.average_precision_score(targets, scores, average="macro"))
    assert result["mAUC"] == pytest.approx(metrics.roc_auc_score(targets, scores, average="macro"))


def test_overrides_are_typed_and_refuse_unknown_fields():
    config = default_config()
    apply_overrides(config, ["batch_size=64", "optim.learning_rate=1e-4", "progress_bar=false",
                             "data.source=demo", "model.dtype=bfloat16"])
    assert (config.batch_size, config.optim.learning_rate, config.progress_bar) == (64, 1e-4, False)
    assert config.data.source == "demo" and config.model.dtype == "bfloat16"
    with pytest.raises(ValueError, match="unknown config field 'optim.lerning_rate'"):
        apply_overrides(config, ["optim.lerning_rate=1"])
    with pytest.raises(ValueError, match="'batch_size' is int"):
        apply_overrides(config, ["batch_size=lots"])
    with pytest.raises(ValueError, match="is a group"):
        apply_overrides(config, ["optim=1"])
    assert isinstance(config, ml_collections.ConfigDict)


def test_home_folder_in_path_fields_is_expanded(monkeypatch, tmp_path):
    """`--config.data.data_dir=~/tfds` reaches the program unexpanded (the shell expands only a word's start)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = apply_overrides(default_config(), ["data.data_dir=~/tfds", "init.source=~/deit.pth",
                                                "data.cache_dir=/abs/~x"])
    with config.data.unlocked():
        config.data.json = ml_collections.ConfigDict(dict(train="~/train.json", validation="eval.json"))
    expanded = expand_user_paths(config)
    assert expanded.data.data_dir == str(tmp_path / "tfds") and expanded.init.source == str(tmp_path / "deit.pth")
    assert dict(expanded.data.json) == {"train": str(tmp_path / "train.json"), "validation": "eval.json"}
    assert expanded.data.cache_dir == "/abs/~x" and config.data.data_dir == "~/tfds"  # a copy; only a leading ~
    config.init.source = "hf:MIT/ast-finetuned-speech-commands-v2"
    assert expand_user_paths(config).init.source == "hf:MIT/ast-finetuned-speech-commands-v2"
