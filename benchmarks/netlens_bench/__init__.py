"""The benchmark behind ``benchmarks/bench_methods.py``: see that script's docstring.

``models`` builds the configurations, ``cases`` and ``peers`` the calls to
time, ``measure`` and ``workers`` run them in fresh processes, ``checks``
compares maps, ``runner`` plans and executes a run, ``report`` and
``markdown`` turn it into the json and markdown results.
"""
