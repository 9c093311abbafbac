"""The ``ecoclassify`` command line (click): thin commands over the library's functions.

``ecoclassify.cli.app`` holds the group and the error mapping; each ``*_command(s)`` module
registers its commands on it. This is the only package that imports click.
"""

from ecoclassify.cli.app import main

__all__ = ["main"]
