"""What every BMC call gets, whatever the protocol: a deadline, retries, pacing, verification.

Real BMCs drop packets, answer "busy", acknowledge commands they then ignore, and fall
over when hammered. So each operation here:

- runs each attempt under a hard deadline (``command_timeout``), even if the library
  underneath hangs;
- retries with exponential backoff and jitter (tenacity), but only for transient
  faults: authentication and configuration errors fail at once;
- keeps a minimum interval between commands to the same BMC (shared by every
  controller in the process, keyed by endpoint);
- verifies every change by reading the state back, polling until it matches, and
  re-issues the change when it does not (the "acknowledged but did nothing" BMC).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import tenacity

from . import registry
from .base import (
    BMCConfigError,
    BMCError,
    BMCTimeout,
    BMCUnavailable,
    BMCVerifyError,
    BootDevice,
    BootOverride,
    Driver,
    Identity,
    PowerAction,
    PowerState,
)
from .registry import DriverRequest

if TYPE_CHECKING:  # the inventory stands above the BMC layer: types only, no runtime import
    from ..inventory.model import Node

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ControllerSettings:
    command_timeout: float = 20.0  # one attempt of one call (library timeouts; hard backstop 2x+1)
    attempts: int = 4  # per operation, including re-issuing a change that did not verify
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    jitter: float = 0.5
    min_interval: float = 0.0  # between two commands to the same BMC
    verify_timeout: float = 30.0  # power on / hard off / reset to be observed
    soft_off_timeout: float = 300.0  # the OS shutting down after an ACPI request
    boot_verify_timeout: float = 3.0  # a boot override is applied at once by any BMC
    verify_poll: float = 0.25  # first pause between reads; doubles up to 2 s

    @classmethod
    def for_node_timeout(cls, bmc_command: float, **overrides: float) -> ControllerSettings:
        """Settings from the inventory's ``cluster.timeouts.bmc_command``."""
        return cls(command_timeout=bmc_command, **overrides)  # type: ignore[arg-type]


class _Pacer:
    """Per-BMC minimum interval between commands, shared by all controllers of a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def wait(self, endpoint: str, interval: float) -> None:
        if interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(endpoint, 0.0))
            self._next[endpoint] = slot + interval
        if slot > now:
            time.sleep(slot - now)


PACER = _Pacer()


class _Call:
    """One call handed to a worker: its outcome, and a lock released when it is known.

    A raw lock rather than a ``threading.Event``: a 1,000-node run makes about 10,000 of these
    hand-offs under heavy thread contention, and an Event's wait builds a Condition and a new
    lock in Python each time; acquiring a pre-acquired lock is one call into C."""

    __slots__ = ("_done", "error", "fn", "value")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self._done = threading.Lock()
        self._done.acquire()
        self.value: object = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        self._done.release()

    def wait(self, timeout: float) -> bool:
        """True once the call finished, False if ``timeout`` passed first."""
        return self._done.acquire(timeout=timeout)


class _Worker:
    """The thread a controller's calls run in, so the caller can stop waiting for a hung one.

    One per controller, kept between calls (a thread per call costs more than the call
    on a busy fan-out); handed on to a later controller when this one closes (``_give_back``,
    a few dozen kept), retired when more are idle than that, when a call overruns its
    deadline (the worker then ends after that call, whenever it returns), or after
    ``IDLE`` seconds without work, so a controller nobody closes leaks no thread.
    """

    IDLE = 30.0

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()  # orders ``run`` against the idle exit
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.alive = True
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def run(self, fn: Callable[[], object]) -> _Call | None:
        """Queue ``fn``; None if this worker has retired (idle) and will not run it."""
        call = _Call(fn)
        with self._lock:
            if not self.alive:
                return None
            self._queue.put(call)
        return call

    def retire(self) -> None:
        with self._lock:
            self.alive = False
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            try:
                call = self._queue.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # nothing was queued meanwhile: retire idle
                        self.alive = False
                        return
                continue
            if call is None:
                return
            try:
                call.value = call.fn()
            except BaseException as exc:  # handed to the caller's thread
                call.error = exc
            finally:
                call.finish()


# Workers of closed controllers, handed to the next controller: a 1,000-node run connects 2,000
# times, and a new thread per connection held a BMC slot while it started (slow on a busy host).
_SPARE_MAX = 64
_spare: list[_Worker] = []
_spare_lock = threading.Lock()


def _take_worker(name: str) -> _Worker:
    with _spare_lock:
        while _spare:
            worker = _spare.pop()
            if worker.alive:  # else it retired idle meanwhile
                return worker
    return _Worker(name)


def _give_back(worker: _Worker) -> None:
    with _spare_lock:
        if worker.alive and len(_spare) < _SPARE_MAX:
            _spare.append(worker)
            return
    worker.retire()


class BMCController:
    """The BMC of one node, as the orchestrator uses it. Thread-compatible, not thread-safe:
    one controller per node per thread (the fan-out gives each node its own)."""

    def __init__(self, node: str, driver: Driver, settings: ControllerSettings, default_uefi: bool) -> None:
        self.node = node
        self.driver = driver
        self.settings = settings
        self.default_uefi = default_uefi
        self.endpoint = driver.endpoint
        self._worker: _Worker | None = None

    # -- plumbing ------------------------------------------------------------------------
    def _attempt(self, action: str, fn: Callable[[], T]) -> T:
        """One call under a hard deadline; anything unexpected becomes a typed error."""
        PACER.wait(self.endpoint, self.settings.min_interval)
        worker = self._worker
        call = worker.run(fn) if worker is not None else None
        if worker is None or call is None:  # none yet, or it retired after idling
            worker = self._worker = _take_worker(f"bmc-{self.node}")
            call = worker.run(fn)
            if call is None:  # a spare that retired just now
                worker = self._worker = _Worker(f"bmc-{self.node}")
                call = worker.run(fn)
            assert call is not None
        # The drivers give the library the command timeout (connect and read each), so
        # the library normally gives up first and its thread is done. This deadline is
        # the backstop for a library that hangs; an abandoned attempt could still
        # reach the BMC late, which is why it is not the primary mechanism.
        if not call.wait(2 * self.settings.command_timeout + 1):
            self._worker = None
            worker.retire()  # it ends once the hung call returns; the next call gets a new one
            self.driver.reset_session()  # abandon it; the library gives up on its own later
            raise BMCTimeout(
                self.node, self.endpoint, action, f"no answer within {self.settings.command_timeout:g}s"
            )
        if call.error is not None:
            exc = call.error
            if isinstance(exc, BMCError):
                raise exc
            if not isinstance(exc, Exception):
                raise exc
            self.driver.reset_session()
            raise BMCUnavailable(self.node, self.endpoint, action, f"{type(exc).__name__}: {exc}") from None
        return cast(T, call.value)

    def _retrying(self, action: str, fn: Callable[[int], T]) -> T:
        s = self.settings

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info(
                "node %s: %s: attempt %d failed (%s); retrying",
                self.node,
                action,
                state.attempt_number,
                exc.reason if isinstance(exc, BMCError) else exc,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(s.attempts),
            wait=tenacity.wait_exponential_jitter(
                multiplier=s.backoff_initial, max=s.backoff_max, jitter=s.jitter
            ),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, BMCError) and e.transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return fn(attempt.retry_state.attempt_number)
        raise AssertionError("unreachable")  # pragma: no cover

    def _poll(
        self, action: str, read: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str
    ) -> T:
        """Read until ``ok`` or ``timeout``; read errors count as "not yet" until the end."""
        deadline = time.monotonic() + timeout
        pause = self.settings.verify_poll
        last: T | None = None
        last_error: BMCError | None = None
        while True:
            try:
                last = self._attempt(action, read)
                last_error = None
                if ok(last):
                    return last
            except BMCError as exc:
                if not exc.transient:
                    raise
                last_error = exc
            if time.monotonic() + pause > deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        if last_error is not None and last is None:
            raise last_error
        raise BMCVerifyError(
            self.node,
            self.endpoint,
            action,
            f"the BMC acknowledged it but {what} (read back: {last}) after {timeout:g}s",
        )

    # -- operations ----------------------------------------------------------------------
    def power_state(self) -> PowerState:
        return self._retrying(
            "power status", lambda _n: self._attempt("power status", self.driver.power_state)
        )

    def _set_power(self, action: PowerAction, want: PowerState, timeout: float) -> None:
        name = f"power {action.value}"

        def attempt(n: int) -> None:
            # Re-issuing: look first, a previous attempt may have worked after all.
            if n > 1 and self._attempt("power status", self.driver.power_state) is want:
                return
            self._attempt(name, lambda: self.driver.power(action))
            self._poll(
                name, self.driver.power_state, lambda s: s is want, timeout, f"power is not {want.value}"
            )

        self._retrying(name, attempt)

    def power_on(self) -> None:
        self._set_power(PowerAction.ON, PowerState.ON, self.settings.verify_timeout)

    def power_off(self, soft: bool = False) -> None:
        if soft:
            self._set_power(PowerAction.SOFT_OFF, PowerState.OFF, self.settings.soft_off_timeout)
        else:
            self._set_power(PowerAction.OFF, PowerState.OFF, self.settings.verify_timeout)

    def power_cycle(self) -> None:
        """Off then on; a node that is off is simply powered on (BMCs refuse to cycle it)."""
        if self.power_state() is PowerState.OFF:
            self.power_on()
            return
        self.power_off()
        self.power_on()

    def reset(self) -> None:
        """Hard reset of a running node (a node that is off is powered on instead)."""

        def attempt(n: int) -> None:
            if self._attempt("power status", self.driver.power_state) is PowerState.OFF:
                self._attempt("power on", lambda: self.driver.power(PowerAction.ON))
            else:
                self._attempt("reset", lambda: self.driver.power(PowerAction.RESET))
            self._poll(
                "reset",
                self.driver.power_state,
                lambda s: s is PowerState.ON,
                self.settings.verify_timeout,
                "power is not on",
            )

        self._retrying("reset", attempt)

    def set_boot_device(self, device: BootDevice, persistent: bool = False, uefi: bool | None = None) -> None:
        device = BootDevice(device)
        uefi = self.default_uefi if uefi is None else uefi
        want = BootOverride(device, persistent, uefi)
        name = (
            f"set boot device {device.value} ({'persistent' if persistent else 'next boot only'}, "
            f"{'UEFI' if uefi else 'BIOS'})"
        )

        def attempt(_n: int) -> None:
            self._attempt(name, lambda: self.driver.set_boot_override(device, persistent, uefi))
            self._poll(
                name,
                self.driver.boot_override,
                lambda b: b == want,
                self.settings.boot_verify_timeout,
                "the boot override differs",
            )

        self._retrying(name, attempt)

    def identity(self) -> Identity:
        return self._retrying(
            "read identity", lambda _n: self._attempt("read identity", self.driver.identity)
        )

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            _give_back(worker)  # idle: ``_attempt`` drops a worker whose call overran
        try:
            self.driver.close()
        except Exception:  # closing is best effort: the BMC may be gone
            log.debug("node %s: closing BMC session failed", self.node, exc_info=True)

    def __enter__(self) -> BMCController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    node: Node, base_dir: Path, settings: ControllerSettings | None = None, password: str | None = None
) -> BMCController:
    """The controller for ``node``'s BMC as the inventory describes it.

    The protocol's registered factory builds the driver (``registry``), so this function
    never names a protocol. Nothing is sent yet; the first operation logs in. The password is
    read from its ``env:``/``file:`` reference now (unless the caller resolved it once for the
    whole run and passes ``password``), so a missing secret fails before any traffic.
    """
    settings = settings or ControllerSettings()
    bmc = node.bmc
    if bmc is None:
        raise BMCConfigError(node.name, "-", "connect", "the node has no bmc in the inventory")
    request = DriverRequest(
        node=node.name,
        settings=bmc,
        password=bmc.password.resolve(base_dir) if password is None else password,
        base_dir=base_dir,
        timeout=settings.command_timeout,
        expected_uuid=node.uuid,
    )
    driver = registry.lookup(bmc.protocol).factory(request)
    return BMCController(node.name, driver, settings, default_uefi=node.boot.mode == "uefi")
