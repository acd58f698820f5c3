"""Fixtures for the report tests: the recorded lab run, a synthetic 1,000-node site, and
one headless Chromium (Debian's, through its chromedriver) shared by the browser tests."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.inventory import load_inventory
from provisioner.layout import StateLayout
from provisioner.report import synthetic, view_of
from provisioner.report.platform import bundle_releases
from provisioner.report.view import SiteView

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LAB_INVENTORY = REPO / "inventory" / "examples" / "lab.yaml"
# The recorded state directory of a finished lab run; the integrator may point this at a real one.
LAB_RUN = Path(os.environ.get("PROVISIONER_REPORT_LAB_RUN", HERE / "data" / "lab-run"))
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FAILED_NODES = ("r03-n007", "r17-n022")
SLOW_NODE = "r09-n011"
FAILED_RELEASE = "cozy-kubeovn/kubeovn"


@pytest.fixture
def lab_run(tmp_path: Path) -> tuple[SiteView, StateLayout]:
    """A private copy of the recorded lab run, with the lab inventory's view of the site."""
    state = tmp_path / "state"
    shutil.copytree(LAB_RUN, state)
    return view_of(load_inventory(LAB_INVENTORY).site), StateLayout(state)


@pytest.fixture(scope="session")
def site_1000(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteView, StateLayout]:
    """1,000 nodes in 25 racks: two failed boots, one slow install, kubeovn failed."""
    layout = StateLayout(tmp_path_factory.mktemp("synthetic") / "state")
    view = synthetic.site(1000, 25)
    scenario = synthetic.Scenario(
        failed=set(FAILED_NODES), slow={SLOW_NODE: 6.0}, platform=True, failed_release=FAILED_RELEASE
    )
    synthetic.write_state(layout, view, scenario)
    releases = {k: r.depends for k, r in bundle_releases("paas-full").items()}
    synthetic.helmreleases_record(layout, FAILED_RELEASE, releases, time.time())
    return view, layout


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for binary in (CHROMIUM, CHROMEDRIVER):
        assert Path(binary).exists(), (
            f"{binary} is missing: run scripts/setup.sh (apt: chromium chromium-driver)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """Console messages at error level since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"screenshot {path} failed"
    return path
