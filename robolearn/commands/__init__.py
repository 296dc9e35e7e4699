"""One module per ``robolearn`` subcommand (see :mod:`robolearn.cli`)."""
