"""Enums of the machine API shared by the client and the lab's stand-in (same numbers as the proto).

Standard library only: the stand-in image imports it.
"""

from __future__ import annotations

import enum


class ApplyMode(enum.IntEnum):
    """``machine.ApplyConfigurationRequest.Mode``."""

    REBOOT = 0
    AUTO = 1
    NO_REBOOT = 2
    STAGED = 3
    TRY = 4


class WipeMode(enum.IntEnum):
    """``machine.ResetRequest.WipeMode``."""

    ALL = 0
    SYSTEM_DISK = 1
    USER_DISKS = 2
