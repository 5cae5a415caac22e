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
