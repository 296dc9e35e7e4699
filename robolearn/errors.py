"""Exceptions shared across robolearn."""


class UserError(Exception):
    """Bad input from the user: the CLI prints it as one line and exits with status 2."""


class PluginError(UserError, ImportError):
    """An env plugin (entry point or ``$ROBOLEARN_PLUGINS`` module) failed to import."""
