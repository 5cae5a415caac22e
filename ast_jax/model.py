"""The Audio Spectrogram Transformer (Gong, Chung and Glass, 2021) in Flax Linen.

The model is a DeiT-distilled ViT run over a log-mel spectrogram. It reads top-down like the paper's figure:
patch embedding, tokens and position table, pre-norm transformer blocks, and the pooled head.

Shapes, with B batch, T frames, F mel bins, D width:
  input   (B, T, F)            frequency is the image height and time the width, as in the PyTorch code
  patches (B, F', T', D)       F' = (F - 16) // frequency_stride + 1, T' = (T - 16) // time_stride + 1
  tokens  (B, 2 + F' * T', D)  [cls, dist, patches...] in frequency-major order (index f * T' + t)
  logits  (B, num_labels)      from LayerNorm + Linear over (token0 + token1) / 2
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ast_jax._checks import is_positive_int

# Width, heads and ImageNet position grid of the DeiT backbones AST starts from.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny224": dict(hidden_size=192, num_heads=3, imagenet_grid=14),
    "small224": dict(hidden_size=384, num_heads=6, imagenet_grid=14),
    "base224": dict(hidden_size=768, num_heads=12, imagenet_grid=14),
    "base384": dict(hidden_size=768, num_heads=12, imagenet_grid=24),
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_name(dtype: Any) -> str:
    """The name ASTConfig takes ("float32", "bfloat16", "float16") for a name or a numpy, JAX or torch dtype
    (`jnp.bfloat16`, `np.float32`, `torch.bfloat16`); a one-line ValueError otherwise."""
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name  # numpy and ml_dtypes (jnp.bfloat16) types and dtypes
        except TypeError:
            name = str(dtype).removeprefix("torch.")  # torch.bfloat16
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return name


@dataclasses.dataclass(frozen=True)
class ASTConfig:
    """Everything that fixes the function an AST computes (and nothing about features or training).

    The defaults are the released AudioSet geometry with the original code's LayerNorm epsilons.
    """

    hidden_size: int = 768  # D, token width
    num_layers: int = 12  # transformer blocks
    num_heads: int = 12  # attention heads; head width is hidden_size // num_heads
    mlp_ratio: int = 4  # MLP hidden width is mlp_ratio * hidden_size
    patch_size: int = 16  # square patch edge, in mel bins and frames
    frequency_stride: int = 10  # patch step along the mel axis
    time_stride: int = 10  # patch step along the frame axis
    num_mel_bins: int = 128  # F
    max_length: int = 1024  # T, frames per input (128 for Speech Commands, 512 for ESC-50)
    num_labels: int = 527
    layer_norm_eps: float = 1e-6  # backbone LayerNorms (original 1e-6; transformers 1e-12)
    head_layer_norm_eps: float = 1e-5  # head LayerNorm (original 1e-5; transformers 1e-12)
    model_size: str = "base384"  # name of the DeiT preset this backbone came from (MODEL_SIZES); a label
    dtype: str = "float32"  # compute dtype of matmuls and activations (the head's LayerNorm and Linear: float32)
    param_dtype: str = "float32"  # storage dtype of parameters

    def __post_init__(self):
        sizes = ("hidden_size", "num_layers", "num_heads", "mlp_ratio", "patch_size", "frequency_stride",
                 "time_stride", "num_mel_bins", "max_length", "num_labels")
        not_positive = [f"{name}={getattr(self, name)!r}" for name in sizes if not is_positive_int(getattr(self, name))]
        if not_positive:  # the checks below would fail on these with Python's own errors
            raise ValueError(f"invalid ASTConfig: sizes must be positive integers, got {', '.join(not_positive)}")
        for name in sizes:  # numpy integers as Python ones: the config is written as JSON
            object.__setattr__(self, name, int(getattr(self, name)))
        problems = []
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_mel_bins < self.patch_size or self.max_length < self.patch_size:
            problems.append(
                f"input {self.max_length} frames x {self.num_mel_bins} mel bins is smaller than one "
                f"{self.patch_size}x{self.patch_size} patch")
        for field in ("layer_norm_eps", "head_layer_norm_eps"):
            value = getattr(self, field)
            if not (isinstance(value, numbers.Real) and 0 < value < float("inf")):
                problems.append(f"{field} must be a positive number, got {value!r}")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                problems.append(f"{field} must be one of {sorted(_DTYPES)}, got {getattr(self, field)!r}")
        if self.model_size not in MODEL_SIZES:
            problems.append(f"model_size must be one of {sorted(MODEL_SIZES)}, got {self.model_size!r}")
        if problems:
            raise ValueError("invalid ASTConfig: " + "; ".join(problems))

    @classmethod
    def from_size(cls, model_size: str, **overrides: Any) -> "ASTConfig":
        """A config for one of the four DeiT sizes (tiny224, small224, base224, base384)."""
        if model_size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {model_size!r}; choose from {sorted(MODEL_SIZES)}")
        preset = {k: v for k, v in MODEL_SIZES[model_size].items() if k != "imagenet_grid"}
        return cls(model_size=model_size, **{**preset, **overrides})

    @property
    def frequency_patches(self) -> int:
        """F', patches along the mel axis (VALID convolution: trailing bins may be left uncovered)."""
        return (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1

    @property
    def time_patches(self) -> int:
        """T', patches along the frame axis."""
        return (self.max_length - self.patch_size) // self.time_stride + 1

    @property
    def num_patches(self) -> int:
        return self.frequency_patches * self.time_patches

    @property
    def compute_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def parameter_dtype(self):
        return _DTYPES[self.param_dtype]

    def replace(self, **changes: Any) -> "ASTConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ASTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ASTConfig fields: {', '.join(unknown)}")
        return cls(**dict(values))


@jax.custom_jvp
def gelu(x):
    """The exact GELU, x * Phi(x) with Phi from erf, written as PyTorch's CPU kernel for nn.GELU() writes it.

    Its derivative Phi(x) + x * phi(x) is spelled out, so that training keeps one array per activation for
    the backward pass; differentiating jax.nn.gelu (erfc, expanded by XLA into several passes) costs about
    three times more on CPU.
    """
    return x * 0.5 * (1 + jax.lax.erf(x * np.asarray(0.5 ** 0.5, x.dtype)))


@gelu.defjvp
def _gelu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    cdf = 0.5 * (1 + jax.lax.erf(x * np.asarray(0.5 ** 0.5, x.dtype)))
    pdf = jnp.exp(-0.5 * x * x) * np.asarray((2 * math.pi) ** -0.5, x.dtype)
    return x * cdf, (cdf + x * pdf) * dx


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, bias, epsilon: float):
    """LayerNorm over the last axis, statistics in float32 (two-pass variance, as PyTorch's kernel); float32 out.

    The backward pass is written out as PyTorch's is: it keeps only the input and the per-row mean and
    reciprocal deviation, and takes the input gradient in one fused pass, rstd * (gy - mean(gy) - xhat *
    mean(gy * xhat)) with gy = g * scale. Left to autodiff, XLA on CPU stores and re-reads several full-size
    intermediates and broadcasts; this form makes a training step about 3% faster.
    """
    return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _layer_norm_forward(x, scale, bias, epsilon):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
    out = centred * rstd * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return out, (x, mean, rstd, scale, bias)


def _layer_norm_backward(epsilon, saved, grad):
    x, mean, rstd, scale, bias = saved
    normed = (x.astype(jnp.float32) - mean) * rstd
    scaled = grad * scale.astype(jnp.float32)
    dx = rstd * (scaled - jnp.mean(scaled, axis=-1, keepdims=True)
                 - normed * jnp.mean(scaled * normed, axis=-1, keepdims=True))
    rows = tuple(range(grad.ndim - 1))
    return (dx.astype(x.dtype), jnp.sum(grad * normed, axis=rows).astype(scale.dtype),
            jnp.sum(grad, axis=rows).astype(bias.dtype))


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


class LayerNorm(nn.Module):
    """nn.LayerNorm's parameters ("scale", "bias") and meaning, computed by `layer_norm`."""

    epsilon: float
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (width,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (width,), self.param_dtype)
        return layer_norm(x, scale, bias, self.epsilon).astype(self.dtype or x.dtype)


def _widened_on_cpu(dtype) -> bool:
    """Whether work in `dtype` is better done in float32 here: bfloat16 or float16 on CPU, where XLA multiplies
    them fast only for a float32 result (about twice float32's speed on CPUs with AVX512-BF16; a product asked
    for in bfloat16 runs slower than float32) and its bfloat16 erf takes three times float32's. Other backends
    already accumulate in float32 and keep the plain forms."""
    return dtype != jnp.float32 and jax.default_backend() == "cpu"


def _product(x, y, dimensions):
    """`jax.lax.dot_general(x, y, dimensions)` in x's dtype, accumulated in float32 and rounded once where
    `_widened_on_cpu`."""
    if not _widened_on_cpu(x.dtype):
        return jax.lax.dot_general(x, y, dimensions)
    return jax.lax.dot_general(x, y, dimensions, preferred_element_type=jnp.float32).astype(x.dtype)


@jax.custom_vjp
def linear(x, kernel, bias):
    """x @ kernel + bias over the last axis of x (nn.Dense's arithmetic).

    On CPU a bfloat16 or float16 product is accumulated in float32 and the bias added before the one rounding
    to x's dtype (see `_product`). The backward pass is written out for XLA on CPU, whose fast matrix-product
    path needs the contracted axis innermost in both operands: the kernel gradient sums over rows, so one
    operand must be transposed first. Left alone XLA may transpose the wide one (the (rows, 3072) MLP
    gradient); here the narrower of input and output gradient is transposed, once, behind an optimisation
    barrier that keeps XLA from undoing the choice (about 2% of a CPU training step). Other backends get the
    plain contraction.
    """
    dimensions = (((x.ndim - 1,), (0,)), ((), ()))
    if not _widened_on_cpu(x.dtype):
        return jax.lax.dot_general(x, kernel, dimensions) + bias
    product = jax.lax.dot_general(x, kernel, dimensions, preferred_element_type=jnp.float32)
    return (product + bias.astype(jnp.float32)).astype(x.dtype)


def _linear_forward(x, kernel, bias):
    return linear(x, kernel, bias), (x, kernel, bias)


def _linear_backward(saved, grad):
    x, kernel, bias = saved
    dx = _product(grad, kernel, (((grad.ndim - 1,), (1,)), ((), ())))
    rows_x, rows_grad = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    rows = (((1,), (0,)), ((), ()))
    if jax.default_backend() != "cpu":
        dkernel = jax.lax.dot_general(rows_x, rows_grad, (((0,), (0,)), ((), ())))
    elif rows_x.shape[1] <= rows_grad.shape[1]:
        dkernel = _product(jax.lax.optimization_barrier(rows_x.T), rows_grad, rows)
    else:
        dkernel = _product(jax.lax.optimization_barrier(rows_grad.T), rows_x, rows).T
    dbias = jnp.sum(rows_grad, axis=0, dtype=jnp.float32)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype), dbias.astype(bias.dtype)


linear.defvjp(_linear_forward, _linear_backward)


class Dense(nn.Module):
    """nn.Dense's parameters ("kernel", "bias"), initialisation and arithmetic, computed by `linear`, and able
    to compute a range of its output columns on its own (the query or key/value part of the fused qkv)."""

    features: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, columns: slice = slice(None)):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel[:, columns], bias[columns], dtype=self.dtype)
        return linear(x, kernel, bias)


def attend_from_few(query, x, kv_kernel, value_bias, num_heads: int):
    """Attention of a few queries (the cls and dist tokens) over all tokens, without forming keys or values:
    the output (B, Q, D) before the output projection, and the softmax weights (B, H, Q, N).

    query (B, Q, D) is projected already; x (B, N, D) is the block's normalised input, kv_kernel (D, 2D) the
    key and value columns of the fused qkv projection, value_bias (D,) the value bias. Each key is x W_k + b_k,
    so a head's logits q . k = (q W_k^T) . x + q . b_k: the query is taken back into the input space (a few
    rows) and the term in b_k, the same for every key, drops out of the softmax. Each head's weights sum to one,
    so p (x W_v + b_v) = (p x) W_v + b_v. This skips the N x D x 2D key and value products of the last block
    (about 1.5% of an AST-base forward at 128 frames) and gives the same result up to rounding.
    """
    batch, length, width = x.shape
    head_dim = width // num_heads
    key_kernel, value_kernel = (w.reshape(width, num_heads, head_dim) for w in jnp.split(kv_kernel, 2, axis=1))
    query = query.reshape(batch, -1, num_heads, head_dim) * np.asarray(head_dim ** -0.5, query.dtype)
    logits = jnp.einsum("bqhc,bnc->bhqn", jnp.einsum("bqhd,chd->bqhc", query, key_kernel), x,
                        preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1)  # (B, H, Q, N)
    mixed = jnp.einsum("bhqn,bnc->bqhc", weights.astype(x.dtype), x)  # (B, Q, H, D)
    out = jnp.einsum("bqhc,chd->bqhd", mixed, value_kernel) + value_bias.reshape(num_heads, head_dim)
    return out.reshape(batch, -1, width), weights


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection, laid out like the original `attn.qkv`."""

    config: ASTConfig

    @nn.compact
    def __call__(self, x, return_attention: bool = False, queries: int | None = None):
        """Attend from the first `queries` tokens (all when None) to every token; `(output, weights or None)`."""
        cfg = self.config
        batch, length, width = x.shape
        head_dim = width // cfg.num_heads
        projection = Dense(3 * width, dtype=cfg.compute_dtype, param_dtype=cfg.parameter_dtype, name="qkv")
        output = Dense(width, dtype=cfg.compute_dtype, param_dtype=cfg.parameter_dtype, name="proj")
        if queries is not None:
            query = projection(x[:, :queries], slice(0, width))  # (B, Q, D)
            qkv = {name: value.astype(cfg.compute_dtype) for name, value in projection.variables["params"].items()}
            out, weights = attend_from_few(query, x, qkv["kernel"][:, width:], qkv["bias"][2 * width:], cfg.num_heads)
            return output(out), weights if return_attention else None
        # (B, N, 3D): query, key and value blocks, heads contiguous inside each. A split (not three slices):
        # its gradient is one concatenation rather than three padded sums.
        qkv = projection(x).reshape(batch, length, 3, cfg.num_heads, head_dim)
        query, key, value = (t.squeeze(2) for t in jnp.split(qkv, 3, axis=2))  # each (B, N, H, Dh)
        weights = None
        if return_attention or jax.default_backend() == "cpu":
            # Heads-major (B, H, N, Dh) products with the softmax in float32. Without attention maps to return,
            # the softmax's division is deferred: exp(logits - max) @ value, then one divide of the (N, Dh)
            # result instead of the (N, N) weights. On CPU this takes about half the time of
            # dot_product_attention's (B, N, H, Dh) layout.
            query, key, value = (jnp.swapaxes(t, 1, 2) for t in (query, key, value))  # each (B, H, N, Dh)
            # Products accumulate in float32 (for bfloat16, XLA:CPU's fast path; see `_product`).
            wide = dict(preferred_element_type=jnp.float32)
            logits = jnp.matmul(query * head_dim ** -0.5, jnp.swapaxes(key, -1, -2), **wide)
            if return_attention:
                weights = jax.nn.softmax(logits, axis=-1)  # (B, H, Q, N)
                out = jnp.matmul(weights.astype(value.dtype), value, **wide)
            else:
                shifted = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
                out = jnp.matmul(shifted.astype(value.dtype), value, **wide) / jnp.sum(shifted, axis=-1, keepdims=True)
            out = jnp.swapaxes(out.astype(value.dtype), 1, 2)  # (B, Q, H, Dh)
        else:
            # Elsewhere let JAX pick the fused kernel (cuDNN flash attention on NVIDIA GPUs).
            out = jax.nn.dot_product_attention(query, key, value, scale=head_dim ** -0.5)
        out = out.reshape(batch, length, width)  # (B, N, D)
        return output(out), weights


class MLP(nn.Module):
    config: ASTConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dense = lambda n, name: Dense(n, dtype=cfg.compute_dtype, param_dtype=cfg.parameter_dtype, name=name)
        x = dense(cfg.mlp_ratio * cfg.hidden_size, "fc1")(x)
        x = gelu(x.astype(jnp.float32)).astype(x.dtype) if _widened_on_cpu(x.dtype) else gelu(x)
        return dense(cfg.hidden_size, "fc2")(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    config: ASTConfig

    @nn.compact
    def __call__(self, x, return_attention: bool = False, queries: int | None = None):
        """Outputs of the first `queries` tokens (all when None); every token still serves as key and value."""
        cfg = self.config
        norm = lambda name: LayerNorm(
            epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.parameter_dtype, name=name)
        attended, weights = Attention(cfg, name="attn")(norm("norm1")(x), return_attention, queries)
        x = x[:, :queries] + attended
        x = x + MLP(cfg, name="mlp")(norm("norm2")(x))
        return x, weights


class AST(nn.Module):
    """Audio Spectrogram Transformer.

    `apply(variables, spectrogram)` takes normalised log-mel features `(B, T, F)` and returns `(logits, out)`.
    `out` holds named intermediates for probes and tools:
      "pooled"        (B, D)  mean of the cls and dist tokens after the final LayerNorm (the embedding)
      "tokens"        (B, N, D) all tokens after the final LayerNorm (unless return_tokens=False)
      "blocks"        tuple of (B, N, D), each block's output (when return_intermediates=True)
      "attention"     tuple of (B, H, N, N), each block's softmax attention (when return_attention=True)

    With `return_tokens=False` the last block computes only the cls and dist tokens, the only ones the logits
    and the pooled embedding read, and forms no keys or values (`attend_from_few`): the same results for about
    8% less work (Speech Commands geometry), and the form inference and training use. It has no effect when
    intermediates or attention maps are requested.
    """

    config: ASTConfig

    @nn.compact
    def __call__(self, spectrogram, *, return_intermediates: bool = False, return_attention: bool = False,
                 return_tokens: bool = True):
        cfg = self.config
        shape = getattr(spectrogram, "shape", None)
        if shape is None or len(shape) != 3 or tuple(shape[1:]) != (cfg.max_length, cfg.num_mel_bins):
            raise ValueError(
                f"AST expects input (batch, {cfg.max_length} frames, {cfg.num_mel_bins} mel bins), "
                f"got {'a ' + type(spectrogram).__name__ if shape is None else tuple(shape)}")
        batch = shape[0]
        init = nn.initializers.truncated_normal(0.02)

        # Frequency is the image height, time the width: (B, T, F) -> NHWC (B, F, T, 1).
        image = jnp.swapaxes(spectrogram, 1, 2)[..., None].astype(cfg.compute_dtype)
        patches = nn.Conv(
            cfg.hidden_size, (cfg.patch_size, cfg.patch_size), strides=(cfg.frequency_stride, cfg.time_stride),
            padding="VALID", dtype=cfg.compute_dtype, param_dtype=cfg.parameter_dtype, name="patch_embed",
        )(image)  # (B, F', T', D)
        tokens = patches.reshape(batch, cfg.num_patches, cfg.hidden_size)  # frequency-major

        cls_token = self.param("cls_token", init, (1, 1, cfg.hidden_size), cfg.parameter_dtype)
        dist_token = self.param("dist_token", init, (1, 1, cfg.hidden_size), cfg.parameter_dtype)
        pos_embed = self.param("pos_embed", init, (1, cfg.num_patches + 2, cfg.hidden_size), cfg.parameter_dtype)
        special = jnp.broadcast_to(jnp.concatenate([cls_token, dist_token], axis=1), (batch, 2, cfg.hidden_size))
        x = jnp.concatenate([special.astype(cfg.compute_dtype), tokens], axis=1)
        x = x + pos_embed.astype(cfg.compute_dtype)  # (B, N, D), N = 2 + F' * T'

        block_outputs, attention = [], []
        all_tokens = return_tokens or return_intermediates or return_attention
        for i in range(cfg.num_layers):
            queries = None if all_tokens or i < cfg.num_layers - 1 else 2  # the last block: cls and dist only
            x, weights = Block(cfg, name=f"block{i}")(x, return_attention, queries)
            if return_intermediates:
                block_outputs.append(x)
            if return_attention:
                attention.append(weights)

        x = LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype,
                      param_dtype=cfg.parameter_dtype, name="norm")(x)
        pooled = (x[:, 0] + x[:, 1]) / 2
        # The head (LayerNorm and Linear, a few thousand products a clip) in float32 whatever the compute dtype:
        # logits rounded to bfloat16 tie (two labels at exactly 2.78125) and the tie is settled by label order.
        head_in = LayerNorm(epsilon=cfg.head_layer_norm_eps, dtype=jnp.float32,
                            param_dtype=cfg.parameter_dtype, name="head_norm")(pooled)
        logits = Dense(cfg.num_labels, dtype=jnp.float32, param_dtype=cfg.parameter_dtype, name="head")(head_in)

        out: dict[str, Any] = {"pooled": pooled}
        if all_tokens:
            out["tokens"] = x
        if return_intermediates:
            out["blocks"] = tuple(block_outputs)
        if return_attention:
            out["attention"] = tuple(attention)
        return logits, out


def compute_copy(params, dtype):
    """`params` with every matrix and larger table (kernels, position table, cls and dist tokens) but the head's
    stored in the compute `dtype`; the vectors (biases, LayerNorm scales) and the head, which `AST` computes in
    float32, left as they are. `AST` casts those tables to its compute dtype on every call anyway, so the results
    are the same, without converting 86 M AST-base parameters per call (bfloat16 on 2 CPU cores, batch 6: 75
    against 92 ms a clip)."""
    if dtype == jnp.float32:
        return params
    return {name: value if name == "head" else jax.tree_util.tree_map(
                lambda p: p.astype(dtype) if np.ndim(p) >= 2 else p, value)
            for name, value in params.items()}


def init_params(config: ASTConfig, rng: jax.Array | int = 0) -> dict:
    """Fresh parameters for `config` (timm-style truncated normal tokens, Flax defaults elsewhere)."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    dummy = jnp.zeros((1, config.max_length, config.num_mel_bins), jnp.float32)
    return jax.jit(AST(config).init)(rng, dummy)["params"]


def parameter_shapes(config: ASTConfig) -> dict:
    """Shapes and dtypes of the parameters (the tree `init_params` makes), without allocating or computing
    anything. Written out rather than traced from `AST.init` (jax.eval_shape), which took 0.3 s of every model
    load at AST-base; tests/test_model.py checks the two agree."""
    width, hidden = config.hidden_size, config.mlp_ratio * config.hidden_size
    array = lambda *shape: jax.ShapeDtypeStruct(shape, config.parameter_dtype)
    dense = lambda inputs, outputs: {"bias": array(outputs), "kernel": array(inputs, outputs)}
    norm = lambda: {"bias": array(width), "scale": array(width)}
    block = lambda: {"attn": {"proj": dense(width, width), "qkv": dense(width, 3 * width)},
                     "mlp": {"fc1": dense(width, hidden), "fc2": dense(hidden, width)},
                     "norm1": norm(), "norm2": norm()}
    return {
        **{f"block{i}": block() for i in range(config.num_layers)},
        "cls_token": array(1, 1, width), "dist_token": array(1, 1, width),
        "head": dense(width, config.num_labels), "head_norm": norm(), "norm": norm(),
        "patch_embed": {"bias": array(width), "kernel": array(config.patch_size, config.patch_size, 1, width)},
        "pos_embed": array(1, config.num_patches + 2, width),
    }


def count_parameters(params_or_shapes) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params_or_shapes)))
