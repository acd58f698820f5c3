"""The controller's hard deadline: a library call that hangs is abandoned, the next one runs."""

from __future__ import annotations

import threading
import time

import pytest

from provisioner.bmc import BMCError, BMCTimeout, ControllerSettings, PowerState, controller
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


def test_a_worker_idle_past_its_limit_retires_and_the_next_call_gets_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A controller nobody uses for ``IDLE`` seconds loses its thread (no leak); its next call
    still runs, on a new worker, and its outcome and errors reach the caller."""
    monkeypatch.setattr(controller._Worker, "IDLE", 0.2)
    monkeypatch.setattr(controller, "_spare", [])
    driver = HangOnceDriver()
    driver.calls = 1  # no hang: every read answers at once
    with BMCController("n1", driver, ControllerSettings(command_timeout=1, attempts=1), True) as ctl:
        assert ctl.power_state() is PowerState.ON
        first = ctl._worker
        assert first is not None and first.alive
        deadline = time.monotonic() + 5
        while first.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not first.alive  # retired idle, its thread gone
        assert ctl.power_state() is PowerState.ON
        assert ctl._worker is not first and ctl._worker is not None and ctl._worker.alive
        with pytest.raises(BMCError, match="boot device"):  # a driver failure, typed, in the caller
            ctl._attempt("read boot device", driver.boot_override)
