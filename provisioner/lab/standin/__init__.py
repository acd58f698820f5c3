"""The Talos stand-in OS that runs inside lab VMs (lean: runs under Debian's python3 in an initramfs)."""
