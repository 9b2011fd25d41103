"""Pick the state resolution kernel: the C extension, or its pure-Python twin.

``ESTUARY_PURE_STATERES=1`` forces the pure-Python kernel. Otherwise the C
extension ``homeserver.state._speedups`` is used when it is built; if it is not
and ``ESTUARY_REQUIRE_C=1`` is set (``scripts/test`` sets it), importing this
module fails instead of silently falling back. The choice is logged when this
module is imported and again by :func:`log_implementation`, which process
start-up calls once logging is configured.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Callable, Mapping

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


def choose_kernel(
    environ: Mapping[str, str], load_c: Callable[[], ModuleType] = load_c_kernel
) -> tuple[ModuleType, str]:
    """The kernel module the environment asks for, and why (for the log).
    Raises ImportError when ``ESTUARY_REQUIRE_C=1`` and the C kernel is
    missing."""
    if environ.get("ESTUARY_PURE_STATERES") == "1":
        return _pure, "pure-Python kernel (ESTUARY_PURE_STATERES=1)"
    try:
        module = load_c()
    except ImportError as e:
        if environ.get("ESTUARY_REQUIRE_C") == "1":
            raise ImportError(
                "ESTUARY_REQUIRE_C=1 but the state resolution C extension is not "
                "built (run `python setup.py build_ext --inplace`): %s" % (e,)
            ) from e
        return _pure, "pure-Python kernel (C extension unavailable: %s)" % (e,)
    return module, "C kernel"


KERNEL, _REASON = choose_kernel(os.environ)
IMPLEMENTATION: str = KERNEL.IMPLEMENTATION


def log_implementation() -> str:
    """Log (INFO) and return which state resolution implementation is live."""
    logger.info("state resolution: %s", _REASON)
    return IMPLEMENTATION


log_implementation()
