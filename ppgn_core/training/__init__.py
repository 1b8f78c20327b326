"""Training code, one module per trained network and its pieces (see :mod:`ppgn_core.train`)."""
