"""The boot flow's parts that need no process: command line, URL substitution, fetch retries, identity."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from provisioner.lab.standin import bootflow

IDENT = bootflow.Identity(
    uuid="4c4c4544-0042-3510-8052-b4c04f384d32", serial="SN 42", mac="52:54:00:12:34:56", hostname="cp1"
)


def test_cmdline_last_value_wins_and_flags_are_kept() -> None:
    args = bootflow.parse_cmdline(
        "console=tty0 talos.platform=metal pti=on quiet talos.config=http://a/b?x=1 pti=off\n"
    )
    assert args["talos.platform"] == "metal"
    assert args["talos.config"] == "http://a/b?x=1"
    assert args["pti"] == "off"
    assert args["quiet"] == ""


def test_variables_substituted_in_query_values_only() -> None:
    url = "http://10.0.0.1:8080/${uuid}/cfg?uuid=${uuid}&s=${serial}&m=${mac}&h=${hostname}&fixed=a"
    out = bootflow.expand_config_url(url, IDENT)
    parts = urlsplit(out)
    assert parts.path == "/${uuid}/cfg"  # the path is never touched
    q = parse_qs(parts.query)
    assert q == {"uuid": [IDENT.uuid], "s": ["SN 42"], "m": [IDENT.mac], "h": ["cp1"], "fixed": ["a"]}


def test_legacy_empty_uuid_is_filled() -> None:
    out = bootflow.expand_config_url("http://h/config?uuid=&other=", IDENT)
    q = parse_qs(urlsplit(out).query, keep_blank_values=True)
    assert q["uuid"] == [IDENT.uuid]
    assert q["other"] == [""]


def test_url_without_query_is_unchanged() -> None:
    assert bootflow.expand_config_url("http://h/${uuid}.yaml", IDENT) == "http://h/${uuid}.yaml"


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("talos.platform=metal talos.config=http://h/c", "http://h/c"),
        ("talos.platform=metal", None),
        ("talos.platform=metal talos.config=none", None),
        ("talos.platform=aws talos.config=http://h/c", None),
    ],
)
def test_config_source(cmdline: str, expected: str | None) -> None:
    assert bootflow.config_url(bootflow.parse_cmdline(cmdline)) == expected


def test_fetch_retries_until_it_gets_a_config() -> None:
    answers: list[bytes | Exception] = [
        ConnectionRefusedError(111, "refused"),
        OSError("404"),
        b"  ",
        b"version: v1alpha1\n",
    ]
    timeouts: list[float] = []
    sleeps: list[float] = []

    def opener(url: str, timeout: float) -> bytes:
        timeouts.append(timeout)
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    policy = bootflow.FetchPolicy(attempt_timeout=7.0, total_timeout=60.0, first_backoff=0.5, max_backoff=1.0)
    assert bootflow.fetch("http://h/c", policy, sleep=sleeps.append, opener=opener) == b"version: v1alpha1\n"
    assert timeouts == [7.0] * 4  # every attempt gets the per-attempt budget
    assert sleeps == [0.5, 1.0, 1.0]  # exponential backoff, capped


def test_fetch_gives_up_after_the_overall_budget() -> None:
    def opener(url: str, timeout: float) -> bytes:
        raise ConnectionRefusedError(111, "refused")

    policy = bootflow.FetchPolicy(
        attempt_timeout=0.05, total_timeout=0.3, first_backoff=0.05, max_backoff=0.05
    )
    with pytest.raises(bootflow.ConfigFetchError, match="http://h/c"):
        bootflow.fetch("http://h/c", policy, opener=opener)


def test_identity_from_sysfs_and_init_environment(tmp_path: Path) -> None:
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "product_uuid").write_text("4C4C4544-0042-3510-8052-B4C04F384D32\n")
    (dmi / "product_serial").write_text("SN42\n")
    net = tmp_path / "sys/class/net"
    for nic, mac in (("lo", "00:00:00:00:00:00"), ("ens3", "52:54:00:AA:BB:CC")):
        (net / nic).mkdir(parents=True)
        (net / nic / "address").write_text(mac + "\n")
    ident = bootflow.read_identity(tmp_path, env={"STANDIN_HOSTNAME": "w1"})
    assert ident == bootflow.Identity(
        "4c4c4544-0042-3510-8052-b4c04f384d32", "SN42", "52:54:00:aa:bb:cc", "w1"
    )
    assert (
        bootflow.read_identity(tmp_path, env={"STANDIN_MAC": "52:54:00:00:00:01"}).mac == "52:54:00:00:00:01"
    )
