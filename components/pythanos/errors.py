"""Error types shared across packages. Each names the place where things went wrong."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (flag, config file, argument): printed as one line, exit code 1."""


class ConfigError(UserError):
    """A configuration document is invalid; the message names the flag or file and the key."""
