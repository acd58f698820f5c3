"""iPXE scripts: the generic chain script and the per-node answers.

Every machine first gets ``/boot.ipxe`` (same text for all), which asks for its own script
with the identity iPXE knows (SMBIOS UUID, boot MAC, serial). The per-node answer depends
on the node's state, so a BMC that keeps PXE first never reinstalls an installed node.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..inventory.model import ConfigDelivery, Node, Site

KERNEL = "kernel-amd64"
INITRAMFS = "initramfs-amd64.xz"

# talos.md: required, recommended, and Talos's own defaults plus consoles.
REQUIRED_ARGS = ("talos.platform=metal", "slab_nomerge", "pti=on")
RECOMMENDED_ARGS = ("init_on_alloc=1", "init_on_free=1")
DEFAULT_ARGS = ("consoleblank=0", "nvme_core.io_timeout=4294967295", "printk.devkmsg=on")
CONSOLE_ARGS = ("console=tty0", "console=ttyS0,115200n8")


@dataclass(frozen=True)
class Endpoint:
    """Where nodes reach the HTTP server."""

    host: str
    port: int

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}" if self.port != 80 else f"http://{self.host}"

    @classmethod
    def for_site(cls, site: Site) -> Endpoint:
        assert site.networks is not None and site.networks.netboot is not None
        nb = site.networks.netboot
        return cls(str(nb.server), nb.http_port)


def boot_script(endpoint: Endpoint) -> str:
    """The script every iPXE client is chained to by DHCP.

    ``${serial:uristring}`` is URL-encoded by iPXE (serials may contain spaces). If the
    server answers 404 (unknown machine), iPXE falls through to ``exit`` so the firmware
    tries its next boot device instead of booting anything from this site.
    """
    url = f"{endpoint.base}/node.ipxe?uuid=${{uuid}}&mac=${{mac:hexhyp}}&serial=${{serial:uristring}}"
    return (
        "#!ipxe\n"
        "# provisioner: identify this machine and fetch its own script\n"
        f"chain --replace --autofree {url} || goto unknown\n"
        ":unknown\n"
        "echo provisioner: this machine (${mac} ${uuid}) is not in the inventory or the server failed\n"
        "sleep 10\n"
        "exit 1\n"
    )


def kernel_args(site: Site, endpoint: Endpoint) -> list[str]:
    """The Talos kernel command line for a node to install.

    With URL delivery ``talos.config`` carries ``${uuid}``; iPXE expands it to the SMBIOS
    UUID when it reads this script (Talos would substitute the same value), so the server
    sees the machine's real UUID either way.
    """
    talos = site.cluster.talos
    args = [*REQUIRED_ARGS, *RECOMMENDED_ARGS, *DEFAULT_ARGS, *CONSOLE_ARGS]
    if talos.config_delivery is ConfigDelivery.URL:
        args.append(f"talos.config={endpoint.base}/config?uuid=${{uuid}}")
    args += list(talos.extra_kernel_args)
    return args


def install_script(site: Site, node: Node, endpoint: Endpoint) -> str:
    """Kernel + initramfs from this server's asset cache, with the Talos arguments."""
    args = " ".join(kernel_args(site, endpoint))
    return (
        "#!ipxe\n"
        f"# provisioner: install Talos {site.cluster.talos.version} on {node.name}\n"
        f"echo provisioner: booting Talos installer for {node.name}\n"
        f"kernel {endpoint.base}/assets/{KERNEL} {args} initrd={INITRAMFS} || goto failed\n"
        f"initrd {endpoint.base}/assets/{INITRAMFS} || goto failed\n"
        "boot || goto failed\n"
        ":failed\n"
        "echo provisioner: could not load the Talos kernel/initramfs; retrying in 10s\n"
        "sleep 10\n"
        f"chain --replace --autofree {endpoint.base}/boot.ipxe\n"
    )


def local_disk_script(node: Node) -> str:
    """Boot the installed OS from the local disk, on BIOS and UEFI iPXE alike.

    UEFI: ``exit`` hands control back to the firmware boot manager, which continues with
    the next boot entry (the disk); ``sanboot --drive 0x80`` does not exist there.
    BIOS: ``exit`` from a PXE ROM is unreliable (some BIOSes hang or reboot), so we boot
    the first hard disk (INT 13h drive 0x80) directly, and only fall back to ``exit``.
    """
    return (
        "#!ipxe\n"
        f"# provisioner: {node.name} is installed; boot it from its disk\n"
        f"echo provisioner: {node.name} is installed, booting from the local disk\n"
        "iseq ${platform} efi && goto efi ||\n"
        "sanboot --no-describe --drive 0x80 || exit 0\n"
        ":efi\n"
        "exit 0\n"
    )
