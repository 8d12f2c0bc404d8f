"""``multipoint seed``: the real organisations, default shares and a local media node.

Idempotent: organisations are matched by their code, so a second run changes nothing;
shares and nodes an operator has set are never overwritten.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.models import MediaNode, MediaWorker, Organisation, Quota

DATA_DIR = Path(__file__).parent / "data"

# Region names in the genitive, as they appear in the names of regional IZS bodies.
REGION_GENITIVE = {
    "CZ010": "hlavního města Prahy",
    "CZ020": "Středočeského kraje",
    "CZ031": "Jihočeského kraje",
    "CZ032": "Plzeňského kraje",
    "CZ041": "Karlovarského kraje",
    "CZ042": "Ústeckého kraje",
    "CZ051": "Libereckého kraje",
    "CZ052": "Královéhradeckého kraje",
    "CZ053": "Pardubického kraje",
    "CZ063": "Kraje Vysočina",
    "CZ064": "Jihomoravského kraje",
    "CZ071": "Olomouckého kraje",
    "CZ072": "Zlínského kraje",
    "CZ080": "Moravskoslezského kraje",
}

CENTRAL_BODIES = (
    ("central:mv", "Ministerstvo vnitra"),
    ("central:mf", "Ministerstvo financí"),
    ("central:mzv", "Ministerstvo zahraničních věcí"),
    ("central:mo", "Ministerstvo obrany"),
    ("central:msp", "Ministerstvo spravedlnosti"),
    ("central:mpsv", "Ministerstvo práce a sociálních věcí"),
    ("central:mzd", "Ministerstvo zdravotnictví"),
    ("central:msmt", "Ministerstvo školství, mládeže a tělovýchovy"),
    ("central:mpo", "Ministerstvo průmyslu a obchodu"),
    ("central:mmr", "Ministerstvo pro místní rozvoj"),
    ("central:mze", "Ministerstvo zemědělství"),
    ("central:mzp", "Ministerstvo životního prostředí"),
    ("central:md", "Ministerstvo dopravy"),
    ("central:mk", "Ministerstvo kultury"),
    ("central:uv", "Úřad vlády České republiky"),
    ("central:csu", "Český statistický úřad"),
    ("central:cuzk", "Český úřad zeměměřický a katastrální"),
    ("central:dia", "Digitální a informační agentura"),
)

# Default guaranteed shares, in basis points of the pool: 4 % per region (its ORP book
# from it too), 10 % for the central bodies together. With the IZS reserve (20 % by
# default) 14 % stays unassigned, for anyone to borrow.
REGION_SHARE_BP = 400
CENTRAL_SHARE_BP = 1000


@dataclass
class SeedReport:
    created: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.created[kind] = self.created.get(kind, 0) + 1


def _upsert(session: Session, report: SeedReport, code: str, name: str, kind: str,
            parent: Organisation | None) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.code == code))
    if org is None:
        org = Organisation(code=code, name=name, kind=kind,
                           parent_id=parent.id if parent else None)
        session.add(org)
        session.flush()
        report.count(kind)
    else:
        org.name, org.kind, org.parent_id = name, kind, parent.id if parent else None
    return org


def _share(session: Session, org: Organisation, share_bp: int) -> None:
    if session.get(Quota, org.id) is None:
        session.add(Quota(organisation_id=org.id, share_bp=share_bp))


def read_regions(data_dir: Path = DATA_DIR) -> list[dict[str, str]]:
    with (data_dir / "regions.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_orp(data_dir: Path = DATA_DIR) -> list[dict[str, str]]:
    with (data_dir / "orp.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def seed(session: Session, *, local_workers: int = 1, worker_capacity_units: int = 800,
         data_dir: Path = DATA_DIR) -> SeedReport:
    report = SeedReport()
    regions: dict[str, Organisation] = {}
    for row in read_regions(data_dir):
        region = _upsert(session, report, row["nuts_code"], row["name"], "region", None)
        regions[row["nuts_code"]] = region
        _share(session, region, REGION_SHARE_BP)
    for row in read_orp(data_dir):
        region = regions[row["region_nuts_code"]]
        _upsert(session, report, f"orp:{row['region_nuts_code']}:{row['orp_name']}",
                row["orp_name"], "orp", region)

    central = _upsert(session, report, "central", "Ústřední orgány státní správy", "group", None)
    _share(session, central, CENTRAL_SHARE_BP)
    for code, name in CENTRAL_BODIES:
        _upsert(session, report, code, name, "central", central)

    # IZS: the national fire rescue service and police with their regional bodies, and
    # the regions' emergency medical services. All are "izs": they book from the reserve.
    hzs = _upsert(session, report, "izs:hzs",
                  "Generální ředitelství Hasičského záchranného sboru České republiky",
                  "izs", None)
    police = _upsert(session, report, "izs:pcr", "Policejní prezidium České republiky",
                     "izs", None)
    zzs = _upsert(session, report, "izs:zzs", "Zdravotnické záchranné služby krajů", "izs",
                  None)
    for code, genitive in REGION_GENITIVE.items():
        _upsert(session, report, f"izs:hzs:{code}",
                f"Hasičský záchranný sbor {genitive}", "izs", hzs)
        _upsert(session, report, f"izs:pcr:{code}",
                f"Krajské ředitelství policie {genitive}", "izs", police)
        _upsert(session, report, f"izs:zzs:{code}",
                f"Zdravotnická záchranná služba {genitive}", "izs", zzs)

    _upsert(session, report, "other:smocr", "Svaz měst a obcí České republiky", "other", None)
    _upsert(session, report, "other:akcr", "Asociace krajů České republiky", "other", None)

    if local_workers > 0 and not session.scalar(select(func.count()).select_from(MediaNode)):
        node = MediaNode(name="local", enabled=True)
        session.add(node)
        session.flush()
        for index in range(local_workers):
            session.add(MediaWorker(node_id=node.id, index=index,
                                    capacity_units=worker_capacity_units, enabled=True))
        report.count("media_node")
    session.flush()
    return report
