"""The periodic jobs the active ``background`` instance runs.

Each feature that needs housekeeping (expiring UIA sessions and login
tokens, purging old device inbox rows...) adds its job here, built from the
process context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.background import Job

if TYPE_CHECKING:
    from workers.app import ProcessContext


def background_jobs(ctx: "ProcessContext") -> list[Job]:
    """Every job the background role runs while it holds the lock."""
    return []
