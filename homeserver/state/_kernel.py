"""Pick the state resolution kernel: the C extension, or its pure-Python twin.

``ESTUARY_PURE_STATERES=1`` forces the pure-Python kernel. Otherwise the C
extension ``homeserver.state._speedups`` is used when it is built; if it is not
and ``ESTUARY_REQUIRE_C=1`` is set (``scripts/test`` sets it), importing this
module fails instead of silently falling back. The choice is logged once per
process.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

from homeserver.state import _pure

logger = logging.getLogger("homeserver.state")

FLAG_POWER = _pure.FLAG_POWER
FLAG_POWER_LEVELS = _pure.FLAG_POWER_LEVELS
FLAG_REJECTED = _pure.FLAG_REJECTED
FLAG_STATE = _pure.FLAG_STATE


def load_c_kernel() -> ModuleType:
    """Import the C kernel (raises ImportError if it is not built)."""
    from homeserver.state import _speedups

    return _speedups


def _choose() -> ModuleType:
    if os.environ.get("ESTUARY_PURE_STATERES") == "1":
        logger.info("state resolution: pure-Python kernel (ESTUARY_PURE_STATERES=1)")
        return _pure
    try:
        module = load_c_kernel()
    except ImportError as e:
        if os.environ.get("ESTUARY_REQUIRE_C") == "1":
            raise ImportError(
                "ESTUARY_REQUIRE_C=1 but the state resolution C extension is not "
                "built (run `python setup.py build_ext --inplace`): %s" % (e,)
            ) from e
        logger.warning("state resolution: C kernel unavailable (%s); using pure Python", e)
        return _pure
    logger.info("state resolution: C kernel")
    return module


KERNEL: ModuleType = _choose()
IMPLEMENTATION: str = KERNEL.IMPLEMENTATION
