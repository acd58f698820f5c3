"""Fixtures for the Kubernetes API server stand-in contract tests: one host cluster (real etcd, the
server as its own process over mutual TLS) per test session, and clients for it."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from kube_helpers import Raw
from lightkube import Client, KubeConfig

from provisioner.lab.kube.host import KubeHost, running

_ns_counter = itertools.count()


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeHost]:
    with running(bookmark_interval=0.5) as host:
        yield host


@pytest.fixture(scope="session")
def client(kube: KubeHost) -> Client:
    return Client(KubeConfig.from_file(kube.kubeconfig), field_manager="tests")


@pytest.fixture(scope="session")
def raw(kube: KubeHost) -> Raw:
    return Raw(kube)


@pytest.fixture
def ns(client: Client) -> str:
    """A fresh namespace for one test (tests share the cluster, never objects)."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Namespace

    name = f"t{os.getpid()}-{next(_ns_counter)}"
    client.create(Namespace(metadata=ObjectMeta(name=name)))
    return name
