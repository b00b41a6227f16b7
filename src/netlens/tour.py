"""Deprecated: the tour is :mod:`netlens.app.tour`."""

from netlens._deprecated import moved

__getattr__ = moved(__name__, "netlens.app.tour")
