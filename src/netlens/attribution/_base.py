"""Deprecated: the base classes are in :mod:`netlens.attribution.base`."""

from netlens._deprecated import moved

__getattr__ = moved(__name__, "netlens.attribution.base")
