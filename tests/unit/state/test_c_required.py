"""The C kernel must be importable wherever it should have been built."""

import os

from twisted.trial.unittest import SynchronousTestCase

from homeserver.state import IMPLEMENTATION, _kernel


class CRequiredTests(SynchronousTestCase):
    def test_c_kernel_built_when_required(self) -> None:
        """With ESTUARY_REQUIRE_C=1 (set by scripts/test after building the
        extension) the C kernel imports and is the live implementation unless
        ESTUARY_PURE_STATERES=1 forces Python."""
        if os.environ.get("ESTUARY_REQUIRE_C") != "1":
            raise self.skipTest("ESTUARY_REQUIRE_C is not set")
        module = _kernel.load_c_kernel()  # raises ImportError if not built
        self.assertEqual(module.IMPLEMENTATION, "c")
        expected = "python" if os.environ.get("ESTUARY_PURE_STATERES") == "1" else "c"
        self.assertEqual(IMPLEMENTATION, expected)

    def test_implementation_is_reported(self) -> None:
        """IMPLEMENTATION names the live kernel."""
        self.assertIn(IMPLEMENTATION, ("c", "python"))
        self.assertEqual(IMPLEMENTATION, _kernel.KERNEL.IMPLEMENTATION)
