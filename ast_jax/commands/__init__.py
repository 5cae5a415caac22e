"""Subcommands of the `ast-jax` command line (see `ast_jax.cli`)."""
