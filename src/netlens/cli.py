"""Deprecated: the ``netlens`` command is :mod:`netlens.app.cli`."""

from netlens._deprecated import moved

__getattr__ = moved(__name__, "netlens.app.cli")
