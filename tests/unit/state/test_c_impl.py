"""State resolution tests against the C kernel (skipped when it is not
built, unless ``ESTUARY_REQUIRE_C=1``: see ``test_c_required``)."""

from twisted.trial.unittest import SynchronousTestCase

from homeserver.state import _kernel
from tests.unit.state._cases import KernelTestsMixin, ScenarioTestsMixin

try:
    c_kernel = _kernel.load_c_kernel()
    skip_reason = None
except ImportError as e:
    c_kernel = None
    skip_reason = "C kernel not built: %s" % (e,)


class CScenarioTests(ScenarioTestsMixin, SynchronousTestCase):
    kernel = c_kernel
    skip = skip_reason


class CKernelTests(KernelTestsMixin, SynchronousTestCase):
    kernel = c_kernel
    skip = skip_reason
