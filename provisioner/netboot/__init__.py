"""Network boot: dnsmasq (DHCP/TFTP/RA), iPXE scripts, the HTTP server and Talos assets.

Nodes find their OS and their identity here. ``service.NetbootService`` ties the parts
together; each module has one job and can be used (and tested) on its own.
"""
