"""The provisioning pipeline: named stages over one state layout (see ``base``)."""
