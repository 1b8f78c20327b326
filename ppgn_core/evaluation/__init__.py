"""Evaluation code, one module per part of the report (see :mod:`ppgn_core.evaluate`)."""
