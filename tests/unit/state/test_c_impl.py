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


class SurfaceTests(SynchronousTestCase):
    skip = skip_reason

    def test_same_surface(self) -> None:
        """The C module exposes exactly the public surface of the Python
        twin (module functions, Graph and StateSet methods)."""
        from homeserver.state import _pure

        def public(obj: object) -> set[str]:
            return {n for n in dir(obj) if not n.startswith("_")}

        for name in ("separate", "separate_interned", "Graph", "StateSet", "IMPLEMENTATION",
                     "FLAG_POWER", "FLAG_POWER_LEVELS", "FLAG_REJECTED", "FLAG_STATE"):
            self.assertTrue(hasattr(c_kernel, name), name)
            self.assertTrue(hasattr(_pure, name), name)
            if name.startswith("FLAG_"):
                self.assertEqual(getattr(c_kernel, name), getattr(_pure, name))
        self.assertEqual(public(c_kernel.Graph()), public(_pure.Graph()))
        self.assertEqual(public(c_kernel.StateSet), public(_pure.StateSet))
