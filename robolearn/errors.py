"""Exceptions shared across robolearn."""


class UserError(Exception):
    """Bad input from the user: the CLI prints it as one line and exits with status 2."""
