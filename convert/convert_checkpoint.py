"""Convert an AST checkpoint to an ast-jax model folder: the same as `ast-jax convert`.

    python convert/convert_checkpoint.py speechcommands_10_10_0.9812.pth models/sc
    python convert/convert_checkpoint.py hf:MIT/ast-finetuned-audioset-10-10-0.4593 models/audioset
"""

import sys

from ast_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]], program=True))
