"""The random transformers AST that every benchmark starts from, so that its agreement checks can fail.

transformers initialises the cls and distillation tokens and the position table to zeros. With them zero, a
model that read the patches in another order, added the wrong position table or pooled one token instead of
the mean of two would give the same logits, and a benchmark's check that both sides compute the same thing
would pass. Here they are drawn like the other weights (truncated normal, std 0.02).
"""

from __future__ import annotations


def random_ast(config, seed: int = 0):
    """`transformers.ASTForAudioClassification(config)` with random weights everywhere, from `seed`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.ASTForAudioClassification(config)
    embeddings = model.audio_spectrogram_transformer.embeddings
    with torch.no_grad():
        for table in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
            torch.nn.init.trunc_normal_(table, std=0.02)
    return model


def onednn_linears(model):
    """`model` with each `torch.nn.Linear` replaced in place by `torch.utils.mkldnn.MkldnnLinear` (same weights).

    A tuning a PyTorch user can make by hand, which neither transformers nor its pipeline does: float32 linear
    layers then multiply with oneDNN's kernels instead of MKL's `sgemm`. On a Zen 5 core, whose multiply-add units are
    512 bits wide, `sgemm` runs at the rate of 256-bit ones, about 40% of the float32 peak, and oneDNN at about
    90% (bench/RESULTS.md, "Why the Zen 5 ratios are so much higher"). Returns `model`.
    """
    import torch
    from torch.utils import mkldnn

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, mkldnn.MkldnnLinear(child, torch.float32))
    return model
