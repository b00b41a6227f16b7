"""Deprecated: the rotation pretext task is :mod:`netlens.datasets.rotation`."""

from netlens._deprecated import moved

__getattr__ = moved(__name__, "netlens.datasets.rotation")
