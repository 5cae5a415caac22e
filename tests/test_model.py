"""The Flax AST against independent references: parameter counts, an independent torch re-statement of the
original forward, dtypes, and the named intermediates."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ast_jax.convert import load_pretrained
from ast_jax.model import AST, ASTConfig, count_parameters, gelu, init_params, layer_norm, linear, parameter_shapes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


# ---- parameter counts -------------------------------------------------------------------------------------------
# The released checkpoints' counts (without the unused DeiT heads), as ../shared/reference/AST_FACTS.md gives them.
@pytest.mark.parametrize("geometry, expected", [
    (dict(max_length=128, num_labels=35), 85_395_491),  # the released Speech Commands model
    (dict(max_length=1024, num_labels=527), 86_594_063),  # the released AudioSet 10/10 models
])
def test_released_parameter_counts(geometry, expected):
    assert count_parameters(parameter_shapes(ASTConfig.from_size("base384", **geometry))) == expected


@pytest.mark.parametrize("size, geometry", [
    ("tiny224", dict(max_length=128, num_labels=35)),
    ("small224", dict(max_length=512, num_labels=50, frequency_stride=12, time_stride=12)),
    ("base224", dict(max_length=1024, num_labels=527, frequency_stride=16, time_stride=16)),
    ("base384", dict(max_length=256, num_mel_bins=64, num_labels=10, time_stride=14)),
])
def test_parameter_counts_match_transformers(size, geometry):
    config = ASTConfig.from_size(size, **geometry)
    reference = transformers.ASTForAudioClassification(transformers.ASTConfig(
        hidden_size=config.hidden_size, num_attention_heads=config.num_heads,
        intermediate_size=4 * config.hidden_size, max_length=config.max_length, num_mel_bins=config.num_mel_bins,
        frequency_stride=config.frequency_stride, time_stride=config.time_stride, num_labels=config.num_labels))
    assert count_parameters(parameter_shapes(config)) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("size, geometry", [
    ("tiny224", dict(max_length=128, num_labels=35, num_layers=3)),
    ("small224", dict(max_length=512, num_mel_bins=64, num_labels=1, frequency_stride=12, time_stride=14)),
    ("base384", dict(max_length=1024, num_labels=527, param_dtype="bfloat16", dtype="bfloat16")),
])
def test_parameter_shapes_are_the_tree_init_makes(size, geometry):
    config = ASTConfig.from_size(size, **geometry)
    dummy = jax.ShapeDtypeStruct((1, config.max_length, config.num_mel_bins), jnp.float32)
    traced = jax.eval_shape(lambda x: AST(config).init(jax.random.PRNGKey(0), x), dummy)["params"]
    assert jax.tree_util.tree_structure(parameter_shapes(config)) == jax.tree_util.tree_structure(traced)
    assert jax.tree_util.tree_leaves(parameter_shapes(config)) == jax.tree_util.tree_leaves(traced)


# ---- an independent torch re-statement of the original forward ------------------------------------------------
class OriginalAttention(torch.nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)

    def forward(self, x):
        batch, length, width = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        weights = ((query @ key.transpose(-2, -1)) * (width // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((weights @ value).transpose(1, 2).reshape(batch, length, width)), weights


class OriginalBlock(torch.nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(width, eps=1e-6)
        self.attn = OriginalAttention(width, heads)
        self.norm2 = torch.nn.LayerNorm(width, eps=1e-6)
        self.mlp = torch.nn.Module()
        self.mlp.fc1 = torch.nn.Linear(width, 4 * width)
        self.mlp.fc2 = torch.nn.Linear(4 * width, width)

    def forward(self, x):
        attended, weights = self.attn(self.norm1(x))
        x = x + attended
        x = x + self.mlp.fc2(torch.nn.functional.gelu(self.mlp.fc1(self.norm2(x))))
        return x, weights


class OriginalAST(torch.nn.Module):
    """The original ASTModel's forward with its module names (`v.*`, `mlp_head.*`), written from the paper's
    description: DeiT backbone with eps 1e-6, pooled (cls + dist) / 2, head LayerNorm eps 1e-5 + Linear."""

    def __init__(self, width, heads, layers, labels, frames, bins=128, fstride=10, tstride=10):
        super().__init__()
        f_dim, t_dim = (bins - 16) // fstride + 1, (frames - 16) // tstride + 1
        self.v = torch.nn.Module()
        self.v.cls_token = torch.nn.Parameter(torch.zeros(1, 1, width))
        self.v.dist_token = torch.nn.Parameter(torch.zeros(1, 1, width))
        self.v.pos_embed = torch.nn.Parameter(torch.zeros(1, f_dim * t_dim + 2, width))
        self.v.patch_embed = torch.nn.Module()
        self.v.patch_embed.proj = torch.nn.Conv2d(1, width, 16, stride=(fstride, tstride))
        self.v.blocks = torch.nn.ModuleList(OriginalBlock(width, heads) for _ in range(layers))
        self.v.norm = torch.nn.LayerNorm(width, eps=1e-6)
        self.v.head = torch.nn.Linear(width, 1000)  # DeiT's ImageNet heads: present in the files, never used
        self.v.head_dist = torch.nn.Linear(width, 1000)
        self.mlp_head = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, labels))

    def forward(self, x):
        x = self.v.patch_embed.proj(x.unsqueeze(1).transpose(2, 3)).flatten(2).transpose(1, 2)
        special = torch.cat([self.v.cls_token, self.v.dist_token], dim=1).expand(x.shape[0], -1, -1)
        x = torch.cat([special, x], dim=1) + self.v.pos_embed
        blocks, attention = [], []
        for block in self.v.blocks:
            x, weights = block(x)
            blocks.append(x)
            attention.append(weights)
        x = self.v.norm(x)
        pooled = (x[:, 0] + x[:, 1]) / 2
        return self.mlp_head(pooled), pooled, blocks, attention


@pytest.mark.parametrize("geometry, prefix", [
    (dict(width=128, heads=2, layers=2, labels=35, frames=128), "module."),  # Speech Commands geometry, DataParallel
    (dict(width=64, heads=1, layers=1, labels=527, frames=1024, fstride=12, tstride=12), ""),  # AudioSet 12/12
])
def test_matches_original_forward(tmp_path, randomize_torch, spectrogram, geometry, prefix):
    reference = randomize_torch(OriginalAST(**geometry))
    path = tmp_path / "original.pth"
    torch.save({prefix + name: value for name, value in reference.state_dict().items()}, path)
    model = load_pretrained(path)
    assert (model.config.layer_norm_eps, model.config.head_layer_norm_eps) == (1e-6, 1e-5)
    assert (model.config.max_length, model.config.time_stride) == (geometry["frames"], geometry.get("tstride", 10))

    x = spectrogram(2, geometry["frames"])
    with torch.no_grad():
        logits, pooled, blocks, attention = reference(torch.from_numpy(x))
    ours, out = model.apply(x, return_intermediates=True, return_attention=True)
    assert np.abs(np.asarray(ours) - logits.numpy()).max() <= 1e-4
    np.testing.assert_allclose(out["pooled"], pooled.numpy(), atol=1e-4)
    for mine, theirs in zip(out["blocks"], blocks, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-4)
    for mine, theirs in zip(out["attention"], attention, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-5)
    # The inference form: the last block computes only the cls and dist tokens, with the same results.
    short, short_out = model.apply(x, return_tokens=False)
    assert np.abs(np.asarray(short) - logits.numpy()).max() <= 1e-4
    np.testing.assert_allclose(short_out["pooled"], pooled.numpy(), atol=1e-4)
    assert set(short_out) == {"pooled"}


def test_layer_norm_epsilons_match_the_original(tmp_path, randomize_torch, spectrogram):
    """LayerNorm inputs with a variance near the epsilons make them decisive (at the weights' usual spread they
    move logits by ~1e-6): a tiny embedding for the first block's norm1 (backbone eps 1e-6, where transformers
    has 1e-12) and a tiny final norm for the head LayerNorm (eps 1e-5). A wrong eps is then far off."""
    reference = randomize_torch(OriginalAST(width=128, heads=2, layers=2, labels=35, frames=128))
    with torch.no_grad():
        v = reference.v
        for tensor in (v.patch_embed.proj.weight, v.patch_embed.proj.bias, v.cls_token, v.dist_token, v.pos_embed):
            tensor.mul_(1e-5)  # block0.norm1 sees a variance of about 1e-10 ... 1e-9
        v.norm.weight.mul_(1e-3), v.norm.bias.mul_(1e-3)  # the head LayerNorm sees a variance of about 1e-6
    torch.save(reference.state_dict(), tmp_path / "original.pth")
    model = load_pretrained(tmp_path / "original.pth")
    x = spectrogram(2, 128)
    with torch.no_grad():
        logits, _, _, attention = reference(torch.from_numpy(x))

    def errors(m):  # relative error of the first block's attention weights (which norm1 feeds) and of the logits
        ours, out = m.apply(x, return_attention=True)
        return [float(np.abs(np.asarray(a) - b.numpy()).max() / np.abs(b.numpy()).max())
                for a, b in ((out["attention"][0], attention[0]), (ours, logits))]

    assert max(errors(model)) < 1e-5
    assert errors(dataclasses.replace(model, config=model.config.replace(layer_norm_eps=1e-12)))[0] > 0.1
    assert errors(dataclasses.replace(model, config=model.config.replace(head_layer_norm_eps=1e-6)))[1] > 0.1


# ---- the model's own contract ------------------------------------------------------------------------------------
TINY = ASTConfig.from_size("tiny224", num_layers=2, max_length=64, num_labels=7)


@pytest.fixture(scope="module")
def tiny_params():
    return init_params(TINY, 0)


def test_attention_path_gives_the_same_logits(tiny_params, spectrogram):
    x = spectrogram(2, 64)
    plain, out = AST(TINY).apply({"params": tiny_params}, x)
    explicit, out_attention = AST(TINY).apply({"params": tiny_params}, x, return_attention=True)
    np.testing.assert_allclose(plain, explicit, atol=1e-5)
    weights = out_attention["attention"]
    assert len(weights) == TINY.num_layers and weights[0].shape == (2, TINY.num_heads, 2 + TINY.num_patches,
                                                                     2 + TINY.num_patches)
    np.testing.assert_allclose(np.asarray(weights[0]).sum(-1), 1.0, atol=1e-5)
    assert "attention" not in out and "blocks" not in out


@pytest.mark.parametrize("geometry", [
    dict(max_length=100, num_mel_bins=64, frequency_stride=16, time_stride=6, num_labels=3),
    dict(max_length=16, num_mel_bins=16, num_labels=1),
])
def test_any_geometry(geometry, spectrogram):
    config = TINY.replace(num_layers=1, **geometry)
    params = init_params(config, 1)
    logits, out = AST(config).apply({"params": params}, spectrogram(3, config.max_length, config.num_mel_bins))
    assert logits.shape == (3, config.num_labels) and out["tokens"].shape == (3, 2 + config.num_patches, 192)
    assert np.isfinite(np.asarray(logits)).all()


def test_bfloat16_compute_keeps_float32_parameters(tiny_params, spectrogram):
    x = spectrogram(2, 64)
    full, _ = AST(TINY).apply({"params": tiny_params}, x)
    half, out = AST(TINY.replace(dtype="bfloat16")).apply({"params": tiny_params}, x)
    assert half.dtype == jnp.float32 and out["tokens"].dtype == jnp.bfloat16
    assert np.abs(np.asarray(half) - np.asarray(full)).max() < 0.1 * np.abs(np.asarray(full)).max()
    assert np.abs(np.asarray(half) - np.asarray(full)).max() > 0  # really computed in bfloat16
    stored = init_params(TINY.replace(param_dtype="bfloat16"), 0)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(stored)} == {jnp.dtype(jnp.bfloat16)}


def test_bfloat16_compute_keeps_the_head_in_float32(tiny_params, spectrogram):
    """The head reads the bfloat16 embedding but computes in float32: logits are not rounded to bfloat16 (where
    two labels can tie exactly)."""
    logits, out = AST(TINY.replace(dtype="bfloat16")).apply({"params": tiny_params}, spectrogram(2, 64))
    assert out["pooled"].dtype == jnp.bfloat16 and logits.dtype == jnp.float32
    pooled = np.asarray(out["pooled"], np.float64)
    centred = pooled - pooled.mean(-1, keepdims=True)
    normed = centred / np.sqrt(pooled.var(-1, keepdims=True) + TINY.head_layer_norm_eps)
    head_norm, head = tiny_params["head_norm"], tiny_params["head"]
    expected = (normed * head_norm["scale"] + head_norm["bias"]) @ np.asarray(head["kernel"], np.float64) + head["bias"]
    np.testing.assert_allclose(logits, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_gelu_and_its_gradient_match_torch():
    x = np.concatenate([np.linspace(-12, 12, 20001), np.random.default_rng(0).standard_normal(5000) * 3])
    x = x.astype(np.float32)
    reference_input = torch.from_numpy(x).requires_grad_()
    reference = torch.nn.functional.gelu(reference_input)  # approximate="none": the erf GELU
    reference.sum().backward()
    np.testing.assert_allclose(gelu(jnp.asarray(x)), reference.detach().numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(gelu))(jnp.asarray(x)), reference_input.grad.numpy(),
                               rtol=0, atol=1e-6)


def assert_gradients_match(grads, torch_grads):
    """Each gradient within 1e-5 of its torch counterpart's largest magnitude."""
    for got, want in zip(grads, torch_grads, strict=True):
        want = want.numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_layer_norm_and_its_gradients_match_torch():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 17, 48)) * 4 + 2).astype(np.float32)  # off-centre rows, as in the residual stream
    scale, bias = (rng.standard_normal(48).astype(np.float32) for _ in range(2))
    weight = rng.standard_normal(x.shape).astype(np.float32)  # loss = sum(weight * out): a non-uniform gradient
    tx, ts, tb = (torch.from_numpy(a).requires_grad_() for a in (x, scale, bias))
    reference = torch.nn.functional.layer_norm(tx, (48,), ts, tb, eps=1e-6)
    (reference * torch.from_numpy(weight)).sum().backward()

    out = layer_norm(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias), 1e-6)
    np.testing.assert_allclose(out, reference.detach().numpy(), rtol=0, atol=2e-5)
    grads = jax.grad(lambda *a: jnp.sum(layer_norm(*a, 1e-6) * weight), argnums=(0, 1, 2))(
        jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias))
    assert_gradients_match(grads, (tx.grad, ts.grad, tb.grad))


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
@pytest.mark.parametrize("width_in, width_out", [(48, 96), (96, 48)])
def test_linear_and_its_gradients_match_torch(backend, width_in, width_out, monkeypatch):
    """Both kernel-gradient forms (transposing the input or the output gradient) and the plain one used off CPU."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 11, width_in)).astype(np.float32)
    kernel = rng.standard_normal((width_in, width_out)).astype(np.float32)
    bias = rng.standard_normal(width_out).astype(np.float32)
    weight = rng.standard_normal((3, 11, width_out)).astype(np.float32)
    tx, tk, tb = (torch.from_numpy(a).requires_grad_() for a in (x, kernel, bias))
    reference = torch.nn.functional.linear(tx, tk.T, tb)
    (reference * torch.from_numpy(weight)).sum().backward()

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    out = linear(x, kernel, bias)
    np.testing.assert_allclose(out, reference.detach().numpy(), rtol=0, atol=1e-4)
    # Eager, not jitted, so that the backward pass sees the patched backend.
    grads = jax.grad(lambda *a: jnp.sum(linear(*a) * weight), argnums=(0, 1, 2))(x, kernel, bias)
    assert_gradients_match(grads, (tx.grad, tk.grad, tb.grad))


def test_bfloat16_linear_rounds_once_on_cpu():
    """bfloat16 products are accumulated in float32 with the bias added before one rounding: forward and both
    gradients within half a bfloat16 step of the exact (float64) result, element by element."""
    rng = np.random.default_rng(3)
    x, kernel, bias, grad = (jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
                             for shape in ((4, 9, 96), (96, 64), (64,), (4, 9, 64)))
    exact = lambda a, b: np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    out, backward = jax.vjp(linear, x, kernel, bias)
    dx, dkernel, _ = backward(grad)
    for got, want in ((out, exact(x, kernel) + np.asarray(bias, np.float64)),
                      (dx, exact(grad, np.asarray(kernel).T)),
                      (dkernel, exact(np.asarray(x).reshape(-1, 96).T, np.asarray(grad).reshape(-1, 64)))):
        assert got.dtype == jnp.bfloat16
        got = np.asarray(got, np.float64)
        half_step = np.abs(np.asarray(jnp.asarray(want, jnp.bfloat16), np.float64)) * 2.0 ** -8
        assert (np.abs(got - want) <= half_step * 1.01 + 1e-30).all()


def test_two_token_last_block_gives_the_same_gradients(tiny_params, spectrogram):
    x = spectrogram(3, 64)

    def loss(params, return_tokens):
        logits, out = AST(TINY).apply({"params": params}, x, return_tokens=return_tokens)
        return jnp.sum(jnp.sin(logits)) + jnp.sum(out["pooled"] ** 2)

    full = jax.grad(loss)(tiny_params, True)
    short = jax.grad(loss)(tiny_params, False)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(full))
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(short), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)


def test_fused_attention_path_agrees(tiny_params, spectrogram, monkeypatch):
    """Off CPU the model calls jax.nn.dot_product_attention; run that branch here (its XLA form) and compare."""
    x = spectrogram(2, 64)
    cpu = [AST(TINY).apply({"params": tiny_params}, x, return_tokens=flag)[0] for flag in (True, False)]
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    fused = [AST(TINY).apply({"params": tiny_params}, x, return_tokens=flag)[0] for flag in (True, False)]
    for a, b in zip(cpu, fused):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_wrong_input_shape_is_refused(tiny_params, spectrogram):
    with pytest.raises(ValueError, match="64 frames, 128 mel bins"):
        AST(TINY).apply({"params": tiny_params}, spectrogram(1, 65))
    one = spectrogram(1, 64)
    for bad, described in ((one[0], r"\(64, 128\)"), (one[None], r"\(1, 1, 64, 128\)"), (one.tolist(), "a list")):
        with pytest.raises(ValueError, match=rf"expects input \(batch, 64 frames, 128 mel bins\), got {described}"):
            AST(TINY).apply({"params": tiny_params}, bad)


@pytest.mark.parametrize("field, value", [("num_heads", 0), ("patch_size", 0), ("hidden_size", -12),
                                          ("mlp_ratio", 0), ("num_layers", 2.5), ("max_length", "128")])
def test_bad_sizes_are_one_line_errors(field, value):
    with pytest.raises(ValueError, match=rf"invalid ASTConfig: sizes must be positive integers, got {field}="):
        ASTConfig(**{field: value})
    with pytest.raises(ValueError, match="invalid ASTConfig: layer_norm_eps must be a positive number"):
        ASTConfig(layer_norm_eps=0.0)
