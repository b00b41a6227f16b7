"""Deprecated: the hook core is :mod:`netlens.hooks`, its exceptions :mod:`netlens.errors`."""

from netlens._deprecated import moved

__getattr__ = moved(__name__, "netlens.hooks")
