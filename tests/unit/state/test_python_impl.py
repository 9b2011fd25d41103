"""State resolution tests against the pure-Python kernel."""

from twisted.trial.unittest import SynchronousTestCase

from homeserver.state import _pure
from tests.unit.state._cases import KernelTestsMixin, ScenarioTestsMixin


class PythonScenarioTests(ScenarioTestsMixin, SynchronousTestCase):
    kernel = _pure


class PythonKernelTests(KernelTestsMixin, SynchronousTestCase):
    kernel = _pure
