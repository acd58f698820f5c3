"""The tenant tree: namespace and host per tenant, inherited services linked to the
tenant that serves them."""

from __future__ import annotations

from html.parser import HTMLParser

from provisioner.report import synthetic
from provisioner.report.render import tenantview


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []
        self.own: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "a" and "inherited" in (a.get("class") or ""):
            self.links.append((str(a["data-service"]), str(a["href"])))
        if tag == "span" and "own" in (a.get("class") or ""):
            self.own.append(str(a["data-service"]))


def test_inherited_services_link_to_the_serving_tenant() -> None:
    root = synthetic.site(10, 2).tenants
    html = tenantview.render(root)
    parsed = _Collect()
    parsed.feed(html)
    assert {
        "tenant-tenant-root",
        "tenant-tenant-acme",
        "tenant-tenant-acme-dev",
        "tenant-tenant-acme-prod",
        "tenant-tenant-beta",
    } <= parsed.ids
    for _, href in parsed.links:
        assert href.lstrip("#") in parsed.ids  # every link lands on a drawn tenant
    assert ("ingress", "#tenant-tenant-acme") in parsed.links  # dev uses acme's ingress
    assert ("etcd", "#tenant-tenant-acme-prod") not in parsed.links  # prod runs its own etcd
    assert "dev.acme.example.test" in html
    assert html.index("tenant-acme-dev") < html.index("tenant-beta")  # depth first, in order


def test_no_tenants_for_a_bundle_without_multitenancy() -> None:
    assert "no tenants" in tenantview.render(None)
