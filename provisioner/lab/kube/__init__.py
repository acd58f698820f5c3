"""A Kubernetes API server stand-in for the lab and the host ("an existing cluster").

No kube-apiserver binary is reachable here, so this package serves the part of the Kubernetes API
contract that real clients (kubectl, lightkube, the provisioner's platform stage) rely on, backed by a
real etcd. It says "stand-in" in ``/version`` and in its logs. Standard library plus PyYAML and
cryptography only: it also runs inside the lab VMs.
"""
