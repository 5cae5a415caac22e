"""Train an AST: `python train.py --config configs/NAME.py --workdir DIR [--config.FIELD=VALUE ...]`.

The same as `ast-jax train`; see `ast-jax train --help` and ast_jax/training/.
"""

import sys

from ast_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], program=True))
