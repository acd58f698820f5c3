"""The tenants section: the tenant tree with namespace, host and who serves each service.

A service the tenant runs itself is a green badge; an inherited one is a link to the
tenant that runs it, so following the link answers "whose ingress does this tenant use"."""

from __future__ import annotations

from html import escape

from ...tenants import SERVICES, TenantNode


def _tenant(node: TenantNode) -> str:
    badges = []
    for svc in SERVICES:
        ns = node.services.get(svc)
        if ns is None:
            continue
        if ns == node.namespace:
            badges.append(f'<span class="svc own" data-service="{svc}">{svc}</span>')
        else:
            badges.append(
                f'<a class="svc inherited" data-service="{svc}" href="#tenant-{escape(ns)}" '
                f'title="{svc} is served by {escape(ns)}">{svc} → {escape(ns)}</a>'
            )
    host = escape(node.host) if node.host else "<i>no host</i>"
    return (
        f'<div class="tenant" id="tenant-{escape(node.namespace)}" data-namespace="{escape(node.namespace)}">'
        f"<b>{escape(node.name)}</b> · <code>{escape(node.namespace)}</code> · {host}<br>"
        f"{''.join(badges) or '<i>no services</i>'}</div>"
    )


def render(root: TenantNode | None) -> str:
    head = '<section id="tenants"><h2>Tenants</h2>'
    if root is None:
        return head + "<p>This bundle has no tenants.</p></section>"
    # Iterative: a deep tenant tree must not hit Python's recursion limit.
    out: list[str] = ['<ul class="tree">']
    stack: list[tuple[TenantNode, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            out.append("</ul></li>" if node.children else "</li>")
            continue
        out.append("<li>" + _tenant(node))
        stack.append((node, True))
        if node.children:
            out.append("<ul>")
            stack.extend((child, False) for child in reversed(node.children))
    out.append("</ul>")
    return head + "".join(out) + "</section>"
