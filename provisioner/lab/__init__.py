"""The virtual lab's stand-ins for hardware: BMC emulators and the machines behind them.

Nothing here talks to real hardware. ``machine`` defines the seam (``Machine``) between
an emulated BMC and what it powers; ``ipmi_bmc`` and ``redfish_bmc`` are the emulators,
``faults`` makes them misbehave on purpose, ``bmc_fleet`` runs many of them at once.
"""
