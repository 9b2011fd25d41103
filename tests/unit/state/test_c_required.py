"""Choosing the kernel: the C module must be importable wherever it should
have been built, and the environment switches work."""

import os
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

from homeserver.state import IMPLEMENTATION, _kernel, _pure


def _missing() -> ModuleType:
    raise ImportError("not built")


class KernelChoiceTests(SynchronousTestCase):
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

    def test_pure_switch(self) -> None:
        """ESTUARY_PURE_STATERES=1 selects the pure kernel even when C loads."""
        module, reason = _kernel.choose_kernel({"ESTUARY_PURE_STATERES": "1"}, load_c=lambda: _pure)
        self.assertIs(module, _pure)
        self.assertIn("ESTUARY_PURE_STATERES", reason)

    def test_missing_c_falls_back_unless_required(self) -> None:
        """Without the C module the pure kernel is used, unless
        ESTUARY_REQUIRE_C=1, which turns it into an import error."""
        module, reason = _kernel.choose_kernel({}, load_c=_missing)
        self.assertIs(module, _pure)
        self.assertIn("unavailable", reason)
        self.assertRaises(ImportError, _kernel.choose_kernel, {"ESTUARY_REQUIRE_C": "1"}, load_c=_missing)

    def test_implementation_is_logged(self) -> None:
        """log_implementation names the live kernel in the log."""
        with self.assertLogs("homeserver.state", level="INFO") as logs:
            self.assertEqual(_kernel.log_implementation(), IMPLEMENTATION)
        self.assertIn("state resolution", logs.output[0])
        self.assertEqual(IMPLEMENTATION, _kernel.KERNEL.IMPLEMENTATION)
