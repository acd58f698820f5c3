"""``Dnsmasq.start`` returns once dnsmasq serves, and never for one that is about to fail.

Real dnsmasq in a namespace of its own (DNS off, TFTP on, listening on the namespace's
loopback only). It binds its sockets before it logs "started" and checks the TFTP root before
it logs "TFTP root is"; ``start`` waits for the last of those lines its config makes, and a
dnsmasq that exits first is an error naming what it said.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from netboot_netns import netns_pair

from provisioner.errors import OperationError
from provisioner.netboot import dnsmasq

pytestmark = pytest.mark.netns


def _conf(paths: dnsmasq.Paths, tftp_root: Path) -> None:
    paths.runtime.mkdir(parents=True, exist_ok=True)
    paths.conf.write_text(
        "port=0\nbind-interfaces\nlisten-address=127.0.0.1\nenable-tftp\n"
        f"tftp-root={tftp_root}\nlog-facility={paths.log}\n"
    )


def _tftp_bound(ns: str) -> bool:
    from netboot_netns import run

    out = run("ip", "netns", "exec", ns, "ss", "-Hulpn", "sport = :69").stdout
    return "dnsmasq" in out


def test_start_returns_with_tftp_served_and_the_startup_logged(tmp_path: Path) -> None:
    paths = dnsmasq.Paths(tmp_path / "run")
    _conf(paths, dnsmasq.IPXE_DIR)  # readable by dnsmasq once it is "nobody" (pytest's tmp is not)
    paths.log.write_text("an earlier start's lines: TFTP root is /elsewhere\n")  # appended to, not read
    with netns_pair("10.232.0.1/24", "52:54:00:ab:00:01") as pair:
        server = dnsmasq.Dnsmasq(paths, ["ip", "netns", "exec", pair.server_ns])
        server.start()
        try:
            assert server.running()
            assert _tftp_bound(pair.server_ns)  # serving by the time start returned
            this_start = paths.log.read_text().split("\n", 1)[1]
            assert "started, version" in this_start and f"TFTP root is {dnsmasq.IPXE_DIR}" in this_start
        finally:
            server.stop()


def test_a_dnsmasq_that_exits_at_start_up_is_an_error_with_its_words(tmp_path: Path) -> None:
    paths = dnsmasq.Paths(tmp_path / "run")
    _conf(paths, tmp_path / "missing")
    with netns_pair("10.232.0.1/24", "52:54:00:ab:00:02") as pair:
        server = dnsmasq.Dnsmasq(paths, ["ip", "netns", "exec", pair.server_ns])
        said = r"dnsmasq failed to start \(exit 3\): TFTP directory .*missing inaccessible"
        with pytest.raises(OperationError, match=said):
            server.start()
        assert not server.running()
