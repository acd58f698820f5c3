"""A non-editable install carries the machine-config templates and renders configs.

The package is built from a copy of the sources (so the checkout gets no build/ directory)
and installed with pip into an empty target directory; a fresh interpreter, started outside
the checkout with only that target added to its path, renders a site's configs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import NODE, SITE

REPO = Path(__file__).resolve().parents[2]


def test_pip_install_renders_configs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("provisioner", "machine-configs"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    templates = target / "provisioner" / "machine_configs"
    assert (templates / "controlplane.yaml.j2").is_file() and not templates.is_symlink()

    site = tmp_path / "site"
    site.mkdir()
    nodes = NODE.format(name="cp1", rack="r1", role="controlplane", i=1, ip=11, protocol="ipmi", extra="")
    text = SITE.format(state=site / "state", delivery="url", boot=60, retries=1, nodes=nodes)
    (site / "site.yaml").write_text(text)
    script = (
        "import sys, provisioner\n"
        "from provisioner.cli import main\n"
        "assert provisioner.__file__.startswith(sys.argv[1]), provisioner.__file__\n"
        "sys.exit(main(['-i', sys.argv[2], 'configs', 'generate']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROVISIONER_MACHINE_CONFIGS"}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run(
        [sys.executable, "-c", script, str(target), str(site / "site.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    config = (site / "state" / "configs" / "cp1.yaml").read_text()
    assert "machine:" in config and "cluster:" in config
