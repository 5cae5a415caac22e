import sys

from ast_jax.cli import main

sys.exit(main())
