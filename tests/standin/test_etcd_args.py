"""``cluster.etcd.extraArgs`` reach the stand-in's etcd as flags, as Talos passes them; the flags the
stand-in itself owns (name, data dir, URLs) cannot be overridden."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from standin_helpers import Secrets, machine_config

from provisioner.lab.standin.config import InvalidConfig, parse
from provisioner.lab.standin.etcd import Etcd, EtcdSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_etcd_args(secrets: Secrets, args: str) -> bytes:
    base = machine_config(secrets, kind="controlplane", hostname="cp1", endpoint="https://127.0.0.1:6443")
    return base + f"    etcd:\n        extraArgs:\n{args}".encode()


def test_extra_args_are_parsed_and_owned_flags_refused(secrets: Secrets) -> None:
    cfg = parse(
        _with_etcd_args(
            secrets, '            heartbeat-interval: "500"\n            election-timeout: 5000\n'
        )
    )
    assert cfg.etcd_extra_args == (("election-timeout", "5000"), ("heartbeat-interval", "500"))
    with pytest.raises(InvalidConfig, match=r"may not set data-dir, listen-client-urls"):
        parse(
            _with_etcd_args(
                secrets, "            data-dir: /tmp/x\n            listen-client-urls: http://x\n"
            )
        )
    with pytest.raises(InvalidConfig, match=r"extraArgs must map flag names to strings"):
        parse(_with_etcd_args(secrets, "            heartbeat-interval: [1]\n"))


def test_etcd_runs_with_the_extra_args(tmp_path: Path) -> None:
    etcd = Etcd(
        EtcdSettings(
            name="cp1",
            address="127.0.0.1",
            data_dir=tmp_path / "etcd",
            log_path=tmp_path / "etcd.log",
            client_port=_free_port(),
            peer_port=_free_port(),
            extra_args=(("election-timeout", "5000"), ("heartbeat-interval", "500")),
        )
    )
    etcd.bootstrap(timeout=60)
    try:
        assert etcd._proc is not None
        argv = Path(f"/proc/{etcd._proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--heartbeat-interval=500" in argv and b"--election-timeout=5000" in argv
        assert etcd.healthy()
    finally:
        etcd.stop()
