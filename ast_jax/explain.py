"""What the model listens to: attention of the cls and dist tokens over the spectrogram's patches.

Two maps, both from the softmax attention each block computes over its first LayerNorm's output:
  rollout         attention rollout (Abnar and Zuidema, 2020): per block, average the heads, add the identity
                  for the residual path and renormalise the rows; multiply the blocks from the first to the last.
                  Row i says how much each input token flowed into token i.
  last_attention  the last block's head-averaged attention of the cls and dist tokens.
Both keep the rows of the two special tokens (the model's pooled output is their mean) and are drawn over the
spectrogram: each patch's weight is spread over the bins and frames it covers (patch_size square, 16 x 16 in
the released models), averaged where patches overlap.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from ast_jax.model import ASTConfig

SPECIAL_TOKENS = 2  # cls and dist come before the patches


def attention_rollout(attention: Sequence[jnp.ndarray]) -> jnp.ndarray:
    """(B, N, N) rollout of per-block attention `[(B, H, N, N), ...]`, first block first. Rows sum to 1."""
    rollout = None
    for weights in attention:
        mixed = weights.astype(jnp.float32).mean(axis=1)
        mixed = mixed + jnp.eye(mixed.shape[-1], dtype=mixed.dtype)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        rollout = mixed if rollout is None else jnp.einsum("bij,bjk->bik", mixed, rollout)
    return rollout


def special_token_maps(attention: Sequence[jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """{"rollout", "last_attention"}: (B, 2, N) rows of the cls and dist tokens."""
    return {"rollout": attention_rollout(attention)[:, :SPECIAL_TOKENS],
            "last_attention": attention[-1].astype(jnp.float32).mean(axis=1)[:, :SPECIAL_TOKENS]}


def patch_grid(token_weights: np.ndarray, config: ASTConfig) -> np.ndarray:
    """(..., F', T') patch grid of per-token weights `(..., N)` (patch tokens are frequency-major)."""
    patches = np.asarray(token_weights)[..., SPECIAL_TOKENS:]
    return patches.reshape(*patches.shape[:-1], config.frequency_patches, config.time_patches)


def grid_to_spectrogram(grid: np.ndarray, config: ASTConfig) -> np.ndarray:
    """(num_mel_bins, max_length) map from a (F', T') patch grid: each bin and frame gets the mean weight of
    the patches covering it; bins no patch covers (the VALID convolution's leftovers) get NaN."""
    total = np.zeros((config.num_mel_bins, config.max_length))
    count = np.zeros_like(total)
    size = config.patch_size
    for f in range(config.frequency_patches):
        for t in range(config.time_patches):
            rows = slice(f * config.frequency_stride, f * config.frequency_stride + size)
            cols = slice(t * config.time_stride, t * config.time_stride + size)
            total[rows, cols] += grid[f, t]
            count[rows, cols] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def plot_explanation(input_values: np.ndarray, maps: dict[str, np.ndarray], path: str, *, title: str = "",
                     frame_shift_ms: float = 10.0, frames: int | None = None) -> None:
    """A PNG: the spectrogram, then each map (name -> (bins, frames)) drawn over it. `frames` limits the
    time axis to the frames that hold audio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = frames or input_values.shape[0]
    spectrogram = np.asarray(input_values)[:frames].T  # (bins, frames), low frequencies at the bottom
    extent = (0, frames * frame_shift_ms / 1000, 0, spectrogram.shape[0])
    figure, axes = plt.subplots(len(maps) + 1, 1, figsize=(max(6.0, min(16.0, frames / 25)), 2.6 * (len(maps) + 1)),
                                sharex=True, squeeze=False)
    axes = axes[:, 0]
    image = axes[0].imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", extent=extent)
    axes[0].set_title(title or "log-mel spectrogram (normalised)")
    figure.colorbar(image, ax=axes[0], fraction=0.03)  # as the maps below have: the panels keep one time axis
    for ax, (name, heat) in zip(axes[1:], maps.items()):
        ax.imshow(spectrogram, origin="lower", aspect="auto", cmap="gray", extent=extent)
        shown = ax.imshow(np.asarray(heat)[:, :frames], origin="lower", aspect="auto", cmap="inferno", alpha=0.6,
                          extent=extent)
        ax.set_title(name)
        figure.colorbar(shown, ax=ax, fraction=0.03)
    for ax in axes:
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel("time (s)")
    import warnings

    with warnings.catch_warnings():  # a title's characters the font lacks (a CJK file name) are drawn as boxes
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
