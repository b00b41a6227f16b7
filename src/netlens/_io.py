"""Deprecated: reading the command's input files is :mod:`netlens.app.files`."""

from netlens._deprecated import moved

__getattr__ = moved(__name__, "netlens.app.files")
