"""Contract checks an attribution method can run on itself.

:func:`check_attribution` runs netlens' attribution contract on any subclass
of :class:`netlens.attribution.Attribution`, a built-in one or your own: the
shape, dtype and device of the maps, the forms of ``target``, batched against
one-at-a-time, the model and the input left as found (also when the model's
forward pass raises, in eval and in train mode), and clear errors on bad
input. Each broken rule raises a :class:`ContractError` that names it::

    from netlens.testing import check_attribution

    def test_my_method_keeps_the_contract():
        check_attribution(MyMethod, layer="features")

:func:`snapshot` and :func:`assert_unchanged` check that any code leaves a
model as it found it; :func:`peak_memory` reads the peak memory a call's
tensors hold, on the CPU as on CUDA, the same on every run. Importing this
module imports neither pytest nor matplotlib.
"""

from netlens.testing.contract import RULES, ContractReport, check_attribution
from netlens.testing.memory import peak_memory
from netlens.testing.models import tiny_cnn
from netlens.testing.state import ContractError, Snapshot, assert_unchanged, snapshot

__all__ = [
    "RULES",
    "ContractError",
    "ContractReport",
    "Snapshot",
    "assert_unchanged",
    "check_attribution",
    "peak_memory",
    "snapshot",
    "tiny_cnn",
]
