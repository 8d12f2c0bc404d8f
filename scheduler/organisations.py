"""Organisations, the tree they form, and which quota each one's bookings are charged to."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from scheduler.models import Organisation, Quota

KINDS: tuple[str, ...] = ("region", "orp", "central", "izs", "group", "other")


@dataclass(frozen=True)
class OrgInfo:
    id: int
    name: str
    kind: str
    parent_id: int | None
    ancestors: tuple[int, ...]  # nearest first

    @property
    def izs(self) -> bool:
        return self.kind == "izs"

    def within(self, organisation_id: int) -> bool:
        """Is this organisation ``organisation_id`` or one under it?"""
        return self.id == organisation_id or organisation_id in self.ancestors


def org_info(session: Session, organisation_id: int) -> OrgInfo | None:
    return org_infos(session, [organisation_id]).get(organisation_id)


def _tree_statement() -> Select[tuple[int, str, str, int | None]]:
    # The organisations asked for and everything above them, in one recursive statement
    # built once (UNION, not UNION ALL: a cycle in the data ends the recursion).
    o = Organisation
    tree = select(o.id, o.name, o.kind, o.parent_id) \
        .where(o.id.in_(bindparam("ids", expanding=True))).cte("tree", recursive=True)
    tree = tree.union(select(o.id, o.name, o.kind, o.parent_id)
                      .join(tree, o.id == tree.c.parent_id))
    return select(tree.c.id, tree.c.name, tree.c.kind, tree.c.parent_id)


_TREE = _tree_statement()


def org_infos(session: Session, organisation_ids: Iterable[int]) -> dict[int, OrgInfo]:
    """The organisations found among ``organisation_ids``, each with its ancestors."""
    wanted = list(organisation_ids)
    rows: dict[int, tuple[str, str, int | None]] = {
        org_id: (name, kind, parent)
        for org_id, name, kind, parent in session.connection().execute(_TREE, {"ids": wanted})}
    return _with_ancestors(rows, set(wanted) & rows.keys())


def all_org_infos(session: Session) -> dict[int, OrgInfo]:
    """Every organisation, with its ancestors."""
    o = Organisation
    rows: dict[int, tuple[str, str, int | None]] = {
        org_id: (name, kind, parent) for org_id, name, kind, parent in
        session.connection().execute(select(o.id, o.name, o.kind, o.parent_id))}
    return _with_ancestors(rows, rows.keys())


def _with_ancestors(rows: Mapping[int, tuple[str, str, int | None]],
                    wanted: Iterable[int]) -> dict[int, OrgInfo]:
    found: dict[int, OrgInfo] = {}
    for org_id in wanted:
        name, kind, parent_id = rows[org_id]
        ancestors: list[int] = []
        parent = parent_id
        while parent is not None and parent in rows and parent not in ancestors \
                and len(ancestors) < 10:
            ancestors.append(parent)
            parent = rows[parent][2]
        found[org_id] = OrgInfo(org_id, name, kind, parent_id, tuple(ancestors))
    return found


def quota_holder(session: Session, org: OrgInfo) -> int | None:
    """The organisation whose guaranteed share this one's bookings use.

    Its own quota if it has one, else the nearest one above it (an ORP without its own
    share uses its region's, together with the region's other ORP), else none: it then
    books only from capacity nobody is guaranteed.
    """
    chain = (org.id, *org.ancestors)
    owners = set(session.scalars(select(Quota.organisation_id)
                                 .where(Quota.organisation_id.in_(chain))))
    return next((candidate for candidate in chain if candidate in owners), None)


def holder_among(org: OrgInfo, owners: Collection[int]) -> int | None:
    """:func:`quota_holder` with the share owners already read (no query)."""
    if org.id in owners:
        return org.id
    return next((candidate for candidate in org.ancestors if candidate in owners), None)


def organisation_json(org: Organisation) -> dict[str, object]:
    return {"id": org.id, "name": org.name, "kind": org.kind, "code": org.code,
            "parent_id": org.parent_id, "email": org.email}


def subtree_ids(session: Session, organisation_id: int) -> list[int]:
    """The organisation and every one under it."""
    rows = session.execute(select(Organisation.id, Organisation.parent_id)).all()
    children: dict[int | None, list[int]] = {}
    for org, parent in rows:
        children.setdefault(parent, []).append(org)
    found, stack = [], [organisation_id]
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.append(current)
        stack.extend(children.get(current, ()))
    return found


def organisation_choices(session: Session, within: Collection[int] | None = None,
                         ) -> list[tuple[int, str, str]]:
    """(id, name, kind) of the organisations (or of those ``within``), by kind and name:
    what a form offers to choose from."""
    query = select(Organisation.id, Organisation.name, Organisation.kind)
    if within is not None:
        query = query.where(Organisation.id.in_(list(within)))
    return [(i, n, k) for i, n, k in session.execute(query.order_by(Organisation.kind,
                                                                      Organisation.name))]


def organisation_names(session: Session, only_quota_holders: bool = False) -> dict[int, str]:
    """Organisation id -> name (all, or those holding a share), by name."""
    query = select(Organisation.id, Organisation.name).order_by(Organisation.name)
    if only_quota_holders:
        query = query.join(Quota, Quota.organisation_id == Organisation.id)
    return dict(session.execute(query).all())
