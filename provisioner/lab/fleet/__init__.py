"""A simulated fleet for `provisioner up`: many machines on loopback, no VMs.

Each simulated machine (a stand-in for a server) has its own loopback address, a BMC from
the lab's IPMI/Redfish emulators (``bmc_fleet``: many BMCs per process), a netboot client
that fetches its iPXE script and machine config from the tool's netboot service when it is
powered on to PXE, and a Talos API stand-in (the lab's apid code: mutual TLS once
installed). ``plan`` writes the matching inventory; ``harness`` runs the real `up` against
it inside a private network namespace and measures it; ``python -m provisioner.lab.fleet``
is the command line.
"""
