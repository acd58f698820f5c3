"""Run the tool's netboot service inside the lab namespace for the lab tests.

Usage: python netboot_in_lab.py INVENTORY IMAGE_DIR STATE_DIR
Imports the lab's stand-in image as the site's Talos assets (re-pinning: the lab image is
rebuilt whenever the stand-in changes), starts ``NetbootService`` (dnsmasq + HTTP), prints
"ready" and serves until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from provisioner.events import EventLog
from provisioner.inventory import load_inventory
from provisioner.netboot import assets
from provisioner.netboot.service import NetbootService
from provisioner.state import StateStore


def main(inventory: str, image_dir: str, state_dir: str) -> int:
    site = load_inventory(Path(inventory)).site
    state = Path(state_dir)
    assets_root = state.parent / "assets"
    image = Path(image_dir)
    assets.import_files(site, image / "vmlinuz", image / "initramfs.zst", root=assets_root, update_lock=True)
    store = StateStore(state)
    events = EventLog(store.events_path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service = NetbootService(site, store, events, assets_root=assets_root, runtime_dir=state / "netboot")
    service.start()
    try:
        print("ready", flush=True)
        stop.wait()
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
