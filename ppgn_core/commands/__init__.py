"""The command-line commands, one module per group (see :mod:`ppgn_core.cli`)."""
