"""Deprecated: the tour's page is :mod:`netlens.app.tour_page`."""

from netlens._deprecated import moved

__getattr__ = moved(__name__, "netlens.app.tour_page")
