"""Cozystack simulator (lab test infrastructure): controllers that react the way the platform reacts.

Work in progress: the pure rules (platform rendering, HelmRelease status, tenants, storage, KubeVirt,
MetalLB) are in place; the process that applies them through the Kubernetes API follows.
"""
