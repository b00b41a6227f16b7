"""The ``netlens`` command and what it needs beyond the library.

:mod:`~netlens.app.cli` parses the command line and runs ``tour``, ``explain``
and ``layers``; :mod:`~netlens.app.tour` trains the digit networks and draws
every method, :mod:`~netlens.app.tour_page` writes the page that shows them;
:mod:`~netlens.app.files` reads the images and state dicts a user points the
command at; :mod:`~netlens.app.audit` scores every method with every metric.
The library never imports this package: it sits on top.
"""

__all__ = ["arguments", "audit", "cli", "dissect_report", "files", "tour", "tour_page"]
