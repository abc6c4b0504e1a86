"""Wiring: builds the services of one process from its settings (no HTTP here)."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.config import Settings, private_dir
from ledger.governance.service import GovernanceService
from ledger.lineage.intake import LineageIntake
from ledger.policy.bundle_entry import record_policy_bundle
from ledger.policy.engine import PolicyEngine, PolicyLimits, load_policy_bundle
from ledger.projections import PROJECTIONS, replayed_by_erasure, scrub_after_erasure
from ledger.security.access import AccessService, violation_screen
from ledger.security.keyring import Keyring, key_state
from ledger.security.keys import KeyFile, check_host_key, dedup_secret, key_id_of, load_signing_key
from ledger.security.principals import PrincipalStore
from ledger.store.db import Database
from ledger.store.ledger import Ledger
from ledger.store.projector import Projector
from ledger.store.replica import ReplicaReads


@dataclass
class Runtime:
    settings: Settings
    db: Database
    ledger: Ledger
    principals: PrincipalStore
    keyring: Keyring
    intake: LineageIntake
    policy: PolicyEngine
    governance: GovernanceService
    access: AccessService
    projector: Projector
    replica: ReplicaReads | None = None  # with LEDGER_READ_DATABASE_URL

    def close(self) -> None:
        self.projector.stop()
        self.db.dispose()


def initialise(settings: Settings, *, policy: PolicyEngine | None = None) -> bool:
    """`ledger init`: data dir, signing key (0600), schema at head, key registered. Idempotent.

    `policy` is passed on to `build_runtime`. Returns True when the database had no principals yet
    (a fresh deployment).
    """
    from ledger.store.migrate import upgrade  # here, not at the top: workers never migrate (Alembic is ~10 MB)

    private_dir(settings.data_dir)
    db = Database(settings.database_url, pool_size=1)
    try:
        upgrade(db.engine)
        path = settings.signing_key_path
        here = key_id_of(load_signing_key(path), settings.origin) if path.exists() else None
        current, retired_at = key_state(db, here)
    finally:
        db.dispose()
    check_host_key(path, settings.origin, current, retired_at)
    rt = build_runtime(settings, policy=policy)
    try:
        rt.keyring.register_current()
        record_policy_bundle(rt.ledger, rt.policy.bundle)
        return rt.principals.count() == 0
    finally:
        rt.close()


def build_runtime(settings: Settings, *, policy: PolicyEngine | None = None) -> Runtime:
    """Wires one process's services. A policy that does not load stops here (fail closed).

    `policy`, if given, must be an engine loaded from `settings.policy_dir` (the tests share one per
    process, as parsing the policies is most of the cost of a runtime); by default it is loaded here.
    """
    if policy is None:
        limits = PolicyLimits(
            max_items=settings.policy_max_items,
            budget_seconds=settings.policy_budget_seconds,
            processes=settings.policy_processes,
        )
        policy = PolicyEngine(load_policy_bundle(settings.policy_dir), limits=limits)
    db = Database(settings.database_url, read_url=settings.read_database_url)
    ledger = Ledger(db=db, signer=KeyFile(settings.signing_key_path, settings.origin))
    principals = PrincipalStore(db.primary_only())  # who may read is never read from a replica

    def roles_of(name: str) -> frozenset[str]:
        p = principals.get(name)
        return p.roles if p is not None else frozenset()

    def clearances_of(name: str) -> frozenset[str]:
        p = principals.get(name)
        return p.clearances if p is not None else frozenset()

    screen = violation_screen(ledger, policy_digest=policy.bundle.digest, clearances_of=clearances_of)
    rewrite = settings.erasure_rewrite
    projector = Projector(
        db.primary_only(),  # the projections are applied on the primary, from what it holds
        PROJECTIONS,
        [screen],
        replays=replayed_by_erasure,
        scrub=lambda d, replayed: scrub_after_erasure(d, replayed, rewrite=rewrite),
    )
    ledger.on_commit = lambda _size: projector.notify()
    governance = GovernanceService(
        ledger,
        policy,
        projector,
        config={
            "max_validation_age_days": settings.max_validation_age_days,
            "required_validations": ["performance", "bias"],
        },
        roles_of=roles_of,
    )
    return Runtime(
        settings=settings,
        db=db,
        ledger=ledger,
        principals=principals,
        keyring=Keyring(db, ledger),
        intake=LineageIntake(
            ledger,
            window=settings.event_time_window,
            dedup_secret=dedup_secret(settings.dedup_key_path, settings.data_dir, settings.signing_key_path),
        ),
        policy=policy,
        governance=governance,
        access=AccessService(ledger, policy, principals, settings.allowed_purposes, projector),
        projector=projector,
        replica=ReplicaReads(db, projector) if db.replica is not None else None,
    )
