"""Talos machine configs and the secrets behind them.

``secrets`` makes (or imports) the cluster's CA bundle exactly as ``talosctl gen secrets``
would, ``configs`` renders one machine config per node from the jinja2 templates in
``machine-configs/`` plus inventory values and user patches, ``checks`` refuses configs
that are known to break bootstrap, and ``talosconfig`` writes and reads the admin client
file the Talos API client uses for mutual TLS.
"""
