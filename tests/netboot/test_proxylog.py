"""Proxy-DHCP answers become ``dhcp.proxy`` events, from dnsmasq's own ``log-dhcp`` lines.

The lines are as dnsmasq 2.89 wrote them in the two-rack lab (a UEFI VM's iPXE ROM asking the
boot server's proxy; ``tests/racks`` checks the same with the real dnsmasq)."""

from __future__ import annotations

from pathlib import Path

from provisioner.events import DHCP_PROXY, EventLog
from provisioner.netboot.proxylog import ProxyLogFollower

MAC = "52:54:00:78:00:21"
ANSWER = """\
Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 available DHCP subnet: 192.168.78.0/255.255.255.0
Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 vendor class: PXEClient:Arch:00007:UNDI:003010
Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 user class: iPXE
Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 PXE(eth0) 52:54:00:78:00:21 proxy
Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 tags: known, ipxe, efi64, eth0
Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 bootfile name: http://192.168.78.140:8080/boot.ipxe
Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 next server: 192.168.78.140
Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 broadcast response
"""
FIRMWARE = """\
Dec  2 04:39:40 dnsmasq-dhcp[17009]: 1111 vendor class: PXEClient:Arch:00007:UNDI:003016
Dec  2 04:39:40 dnsmasq-dhcp[17009]: 1111 PXE(eth0) 52:54:00:99:00:01 proxy
Dec  2 04:39:40 dnsmasq-dhcp[17009]: 1111 tags: known, efi64, eth0
Dec  2 04:39:40 dnsmasq-dhcp[17009]: 1111 next server: 192.168.78.140
Dec  2 04:39:40 dnsmasq-dhcp[17009]: 1111 broadcast response
Dec  2 04:39:41 dnsmasq-dhcp[17009]: 1111 vendor class: PXEClient:Arch:00007:UNDI:003016
Dec  2 04:39:41 dnsmasq-dhcp[17009]: 1111 PXE(eth0) 192.168.78.133 52:54:00:99:00:01 snponly.efi
"""


def _follower(tmp_path: Path, before: str = "") -> tuple[Path, EventLog, ProxyLogFollower]:
    log = tmp_path / "dnsmasq.log"
    log.write_text(before)
    events = EventLog(tmp_path / "events.jsonl")
    return log, events, ProxyLogFollower(log, events, {MAC: "w1"}.get)


def _append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def test_a_proxy_answer_is_one_event_naming_the_node_and_its_boot_file(tmp_path: Path) -> None:
    log, events, follower = _follower(tmp_path, before=FIRMWARE)  # an earlier run's lines: skipped
    _append(log, ANSWER)
    assert follower.poll() == 1
    _append(log, ANSWER)  # the REQUEST after the DISCOVER: the same answer again
    assert follower.poll() == 0
    (ev,) = [e for e in events.iter() if e.kind == DHCP_PROXY]
    assert (ev.node, ev.outcome) == ("w1", "ok")
    assert ev.data["mac"] == MAC and ev.data["interface"] == "eth0"
    assert ev.data["bootfile"] == "http://192.168.78.140:8080/boot.ipxe"
    assert ev.data["arch"] == 7 and ev.data["ipxe"] is True and ev.data["xid"] == 669175318


def test_firmware_gets_a_menu_then_its_file_and_partial_lines_and_rotation(tmp_path: Path) -> None:
    """A PXE firmware: the DISCOVER's answer is the PXE menu, the boot-server reply names the
    file (and the address the firmware already has); an unknown MAC is "unknown"."""
    log, events, follower = _follower(tmp_path)
    head, tail = FIRMWARE[:150], FIRMWARE[150:]
    _append(log, head)  # dnsmasq is mid-line
    assert follower.poll() == 0
    _append(log, tail)
    assert follower.poll() == 2
    menu, file = events.iter()
    assert (menu.node, menu.outcome, menu.data["menu"], menu.data["bootfile"]) == (
        None,
        "unknown",
        True,
        None,
    )
    assert (file.data["bootfile"], file.data["ip"], file.data["ipxe"]) == (
        "snponly.efi",
        "192.168.78.133",
        False,
    )
    log.write_text(ANSWER[: ANSWER.index("Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 tags:")])  # rotated
    assert follower.poll() == 0
    _append(log, ANSWER[ANSWER.index("Dec  2 04:39:49 dnsmasq-dhcp[17009]: 669175318 tags:") :])
    assert follower.poll() == 1
    assert [e.node for e in events.iter()] == [None, None, "w1"]


def test_an_address_handing_dnsmasq_emits_nothing_here(tmp_path: Path) -> None:
    """Without ``proxy`` the lease hook reports the answer: no second event from the log."""
    log, events, follower = _follower(tmp_path)
    _append(log, ANSWER.replace(f"PXE(eth0) {MAC} proxy", f"DHCPOFFER(eth0) 192.168.78.131 {MAC}"))
    assert follower.poll() == 0 and list(events.iter()) == []
