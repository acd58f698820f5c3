"""Cozystack simulator: a lab stand-in for Cozystack's installer, Flux and operators.

Run as ``python -m provisioner.lab.kube.cozysim --kubeconfig PATH [--delay S] [--faults SPEC]`` beside
the Kubernetes API server stand-in (``provisioner/lab/kube``). It talks to the API only through
lightkube, like a real controller: list+watch with resume (``informer``), server-side apply with field
manager ``cozystack-simulator``, statuses through ``/status``, one active instance at a time through the
Lease ``cozy-system/cozystack-simulator`` (``leader``). Its rules come from the upstream facts copied into
``provisioner/cozystack/upstream/`` (each module cites the note it follows); the pure rules live in
``platform``, ``helmrelease``, ``tenancy``, ``storage``, ``virt`` and ``network``; the loop and the
HelmRelease controller in ``controller``, what reads the caches and writes in ``installer`` (v0/v1),
``components`` and ``tenant_controller``. Dependencies: lightkube, PyYAML and the standard library
(it also runs in the lab VMs).

The contract, what a client sees:

- **v0** (``notes/platform-install.md`` §1): once Namespace ``cozy-system``, ConfigMap
  ``cozy-system/cozystack`` and Deployment ``cozy-system/cozystack`` (the installer) exist and the
  configuration renders, the Flux CRDs ``helmreleases.helm.toolkit.fluxcd.io`` and
  ``helmrepositories.source.toolkit.fluxcd.io`` appear, then the bundle's namespaces, HelmRepositories
  and HelmReleases (``platform``), plus ``tenant-root/tenant-root``. Releases no longer rendered
  (``bundle-disable``, a removed ``bundle-enable``) are deleted, as the installer's
  ``marked-for-deletion`` step does.
- **v0 render failure** (a paas-* bundle without ``root-host`` / ``api-server-endpoint``, a missing
  ConfigMap, an unknown ``bundle-name``): no Flux CRD and no HelmRelease is written (upstream's
  installer renders before it installs Flux); the installer Deployment's
  ``status.conditions`` get ``Available=False`` with reason ``RenderFailed`` and message
  ``platform render failed: <upstream message>`` (e.g. ``ERROR need root-host in cozystack ConfigMap``),
  ``status.unavailableReplicas: 1``; and a ``Warning`` Event with reason ``RenderFailed`` is recorded
  in ``cozy-system`` on that Deployment (the real installer pod fails the same way and restarts).
  When the ConfigMap is fixed, the Deployment turns ``Available=True`` (``MinimumReplicasAvailable``) and
  the platform renders.
- **v1** (§7): once Deployment ``cozy-system/cozystack-operator`` exists, the Flux, Package and
  PackageSource CRDs and PackageSource ``cozystack.cozystack-platform`` appear. Package
  ``cozystack.cozystack-platform`` renders isp-full / isp-full-generic with the paas-full list and
  isp-hosted with the paas-hosted list (the reference holds v0.41.11 lists only); it turns
  ``Ready=True`` reason ``ReconciliationSucceeded`` once its HelmReleases are *created*, and
  ``Ready=False`` (``VariantNotFound`` / ``InvalidConfiguration``) when it cannot render.
- **HelmReleases** (any, not only the platform's): see ``helmrelease``: ``DependencyNotReady``, then
  after ``--delay`` seconds ``InstallSucceeded``; ``observedGeneration``; ``requestedAt`` and suspend.
  Faults from the shared spec (``provisioner/lab/kube/faults.py``): ``stuck=<release>`` ends its first
  attempt ``Ready=False RetriesExceeded`` until a requestedAt nudge (or suspend/resume);
  ``fail=<release>`` fails every attempt (``InstallFailed``, ``Stalled RetriesExceeded``).
- **Nodes**: when the bundle has a CNI (cilium / kubeovn), each Node's ``Ready`` condition is False
  ``NetworkPluginNotReady`` until those releases are Ready, then True ``KubeletReady``.
- **Storage** (``storage``): after HelmRelease ``cozy-linstor/piraeus-operator`` is Ready, the piraeus CRDs;
  after ``cozy-linstor/linstor``, LinstorCluster ``linstorcluster`` and one LinstorSatellite per Node,
  whose ``Configured`` condition reports the pools or a missing device, checked against the Node
  annotation ``lab.provisioner/disks``.
- **KubeVirt / CDI** (``virt``): CRDs after the operator releases, the CRs after ``kubevirt`` /
  ``kubevirt-cdi``, then ``phase: Deployed`` with Available/Progressing/Degraded; the annotation
  ``lab.provisioner/degraded`` on a CR sets Degraded=True while the phase stays Deployed.
- **MetalLB** (``network``): the IPAddressPool / L2Advertisement CRDs after ``cozy-metallb/metallb``;
  Service ``tenant-root/root-ingress-controller`` once Tenant root enables ingress and its ``ingress``
  release is Ready, with an address from the first IPAddressPool, or ``externalIPs`` from
  ``expose-external-ips`` (v1: ``publishing.externalIPs``).
- **Tenants** (``tenancy``): once ``cozystack-api`` and ``tenant-root`` are Ready, APIService
  ``v1alpha1.apps.cozystack.io`` and Tenant ``tenant-root/root``. A Tenant gets HelmRelease
  ``tenant-<name>`` in its namespace; once that is Ready, its namespace with the inherited
  ``namespace.cozystack.io/*`` labels and one HelmRelease per enabled service plus ``info``; its status
  shows the release's Ready/Released conditions and ``namespace``. Deleting it removes both.
"""
