"""The controller's hard deadline: a library call that hangs is abandoned, the next one runs."""

from __future__ import annotations

import threading
import time

import pytest

from provisioner.bmc import BMCTimeout, ControllerSettings, PowerState
from provisioner.bmc.base import BootOverride, Identity
from provisioner.bmc.controller import BMCController


class HangOnceDriver:
    """A driver whose first power-status read hangs until released."""

    endpoint = "fake://bmc"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.threads: set[str] = set()
        self.resets = 0

    def power_state(self) -> PowerState:
        self.calls += 1
        self.threads.add(threading.current_thread().name + str(threading.get_ident()))
        if self.calls == 1:
            self.release.wait(10)
        return PowerState.ON

    def power(self, action: object) -> None: ...

    def boot_override(self) -> BootOverride:
        raise NotImplementedError

    def set_boot_override(self, *args: object) -> None: ...

    def identity(self) -> Identity:
        return Identity()

    def reset_session(self) -> None:
        self.resets += 1

    def close(self) -> None: ...


def test_a_hung_call_is_abandoned_and_the_next_call_runs_in_a_new_worker() -> None:
    driver = HangOnceDriver()
    settings = ControllerSettings(command_timeout=0.1, attempts=1)
    with BMCController("n1", driver, settings, default_uefi=True) as ctl:
        start = time.monotonic()
        with pytest.raises(BMCTimeout, match="no answer"):
            ctl.power_state()
        assert time.monotonic() - start < 3
        assert driver.resets == 1
        assert ctl.power_state() is PowerState.ON  # not queued behind the hung call
        assert ctl.power_state() is PowerState.ON
        driver.release.set()
    assert driver.calls == 3
    assert len(driver.threads) == 2  # the hung worker, then one worker for the later calls
