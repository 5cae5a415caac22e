"""Write an ast-jax model as a Hugging Face transformers folder.

The folder holds config.json, preprocessor_config.json and model.safetensors, and loads with
transformers.ASTForAudioClassification.from_pretrained and ASTFeatureExtractor.from_pretrained. transformers
has one LayerNorm eps: a model whose head eps differs from its backbone's (the original checkpoints: backbone
1e-6, head 1e-5) is exported with the backbone's, which moves its logits slightly (a warning says so).

example:
  ast-jax export-hf models/sc exported/sc
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="ast-jax model folder (or any source `convert` reads)")
    parser.add_argument("output", metavar="OUTPUT_DIR", help="Hugging Face folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists")


def run(args: argparse.Namespace) -> int:
    from ast_jax.convert import export_hf

    output = export_hf(args.model, args.output, overwrite=args.overwrite)  # warnings: one line each (cli.py)
    print(f"wrote {output}")
    return 0
