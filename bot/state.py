"""gtbot's memory: plans and their launch state, watched jobs, and the scheduler lease.

SQLAlchemy Core over SQLite by default (PostgreSQL by URL). The database, not the process, is
the truth: Launch is a compare-and-set on the plan row, completion is announced by a
compare-and-set on the watch row, so retries, double clicks, restarts and replicas cannot spend
twice or post twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import migrations
from bot.errors import ConfigError

# Writers wait for each other this long before SQLite says "database is locked".
SQLITE_BUSY_MS = 30000

# The tables as this gtbot uses them. The database gets them from the Alembic revisions in
# bot/migrations/ (a test checks that both agree), never from metadata.create_all.
metadata = sa.MetaData()

schema_version = sa.Table(
    "gtbot_schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

plans = sa.Table(
    "gtbot_plans",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("region", sa.String(32), nullable=False),
    sa.Column("job_name", sa.String(63), nullable=False, unique=True),
    sa.Column("requested_by", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("message_ts", sa.String(32)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("decided_by", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("manifest_sha256", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # A follow-up round (bot/jobs/relabel.py): its parent job, its round (2, 3, ...) and the thread
    # its card lives in (the parent's).
    sa.Column("parent", sa.String(63)),
    sa.Column("round", sa.Integer),
    sa.Column("thread_ts", sa.String(32)),
)

# A job launched with an adaptive policy: the policy as launched and whether rounds go on.
chains = sa.Table(
    "gtbot_chains",
    metadata,
    sa.Column("root", sa.String(63), primary_key=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("region", sa.String(32), nullable=False),
    sa.Column("policy", sa.Text, nullable=False),
    sa.Column("launched_by", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("thread_ts", sa.String(32)),
    sa.Column("state", sa.String(16), nullable=False),  # active | stopped | done | failed
    sa.Column("reason", sa.Text),
    sa.Column("stopped_by", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

watches = sa.Table(
    "gtbot_watches",
    metadata,
    sa.Column("job_name", sa.String(63), primary_key=True),
    sa.Column("region", sa.String(32), nullable=False),
    sa.Column("project", sa.String(64)),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("message_ts", sa.String(32)),
    sa.Column("thread_ts", sa.String(32)),
    sa.Column("owner", sa.String(64)),
    sa.Column("job_created", sa.DateTime(timezone=True)),
    sa.Column("last_status", sa.String(32)),
    sa.Column("last_counters", sa.Text),
    sa.Column("completion_announced", sa.Boolean, nullable=False, default=False),
    sa.Column("parked", sa.Boolean, nullable=False, default=False),
    sa.Column("park_reason", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # When the job's counts last moved, and when its stall was told (None: not stalled).
    sa.Column("progress_at", sa.DateTime(timezone=True)),
    sa.Column("stall_told_at", sa.DateTime(timezone=True)),
    # The channel is gone: no card; the people to tell are told in direct messages.
    sa.Column("dm_only", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
)

# Who asked `watch <job> --notify`: mentioned when the job ends, fails or stalls.
subscribers = sa.Table(
    "gtbot_subscribers",
    metadata,
    sa.Column("job_name", sa.String(63), primary_key=True),
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# The end of a job, told once: a record of steps (the text, then each file), each done once.
announcements = sa.Table(
    "gtbot_announcements",
    metadata,
    sa.Column("job_name", sa.String(63), primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("thread_ts", sa.String(32)),
    sa.Column("steps", sa.Text),  # JSON list of steps; NULL until the text is composed
    sa.Column("state", sa.String(16), nullable=False),  # open | done
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

leases = sa.Table(
    "gtbot_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite drops the timezone; everything in gtbot is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class PlanRow:
    id: str
    project: str
    region: str
    job_name: str
    requested_by: str
    channel: str
    message_ts: str | None
    state: str
    summary: dict[str, Any]
    request: dict[str, Any]
    decided_by: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    manifest_sha256: str | None = None
    parent: str | None = None
    round: int | None = None
    thread_ts: str | None = None


@dataclass(frozen=True)
class ChainRow:
    root: str
    project: str
    region: str
    policy: dict[str, Any]
    launched_by: str
    channel: str
    thread_ts: str | None
    state: str
    reason: str | None
    stopped_by: str | None


@dataclass(frozen=True)
class WatchRow:
    job_name: str
    region: str
    project: str | None
    channel: str
    message_ts: str | None
    thread_ts: str | None
    owner: str | None
    job_created: datetime | None
    last_status: str | None
    last_counters: dict[str, int] | None
    completion_announced: bool
    parked: bool
    park_reason: str | None
    created_at: datetime
    progress_at: datetime | None = None
    stall_told_at: datetime | None = None
    dm_only: bool = False


@dataclass(frozen=True)
class AnnouncementRow:
    job_name: str
    channel: str
    thread_ts: str | None
    steps: list[dict[str, Any]] | None
    state: str
    claimed_by: str | None


class ClaimLost(Exception):
    """Another holder took over this announcement: this one must stop posting."""


class Store:
    """All database access goes through here; methods are small and transactional."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            # Several threads (Bolt's listeners, the scheduler) share one engine: SQLAlchemy 2
            # pools a file SQLite database with check_same_thread off, and the pragmas below
            # make its writers wait for each other instead of failing at once.
            self.engine: Engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(
                f"GTBOT_DATABASE_URL={url!r} is not a database URL gtbot can use ({exc}). "
                "Example: sqlite:///gtbot.db or postgresql+psycopg://user@host/gtbot"
            ) from None
        if url.startswith("sqlite"):

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
                cursor.close()

        migrations.upgrade(self.engine)

    # ------------------------------------------------------------------ plans

    def add_plan(
        self,
        *,
        plan_id: str,
        project: str,
        region: str,
        job_name: str,
        requested_by: str,
        channel: str,
        summary: dict[str, Any],
        request: dict[str, Any],
        manifest_sha256: str | None = None,
        parent: str | None = None,
        round: int | None = None,
        thread_ts: str | None = None,
    ) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(plans).values(
                    parent=parent,
                    round=round,
                    thread_ts=thread_ts,
                    id=plan_id,
                    project=project,
                    region=region,
                    job_name=job_name,
                    requested_by=requested_by,
                    channel=channel,
                    state="pending",
                    summary=json.dumps(summary),
                    request=json.dumps(request),
                    manifest_sha256=manifest_sha256,
                    created_at=now,
                    updated_at=now,
                )
            )

    def set_plan_message(self, plan_id: str, message_ts: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(plans).where(plans.c.id == plan_id).values(message_ts=message_ts)
            )

    def get_plan(self, plan_id: str) -> PlanRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(plans).where(plans.c.id == plan_id)).first()
        return None if row is None else _plan(row)

    def transition_plan(
        self,
        plan_id: str,
        from_states: tuple[str, ...],
        to_state: str,
        *,
        by: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Compare-and-set: True for exactly one caller, however many race."""
        values: dict[str, Any] = {"state": to_state, "updated_at": utcnow()}
        if by is not None:
            values["decided_by"] = by
        if error is not None:
            values["error"] = error
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(plans)
                .where(plans.c.id == plan_id, plans.c.state.in_(from_states))
                .values(**values)
            )
        return result.rowcount == 1

    def plan_for_job(self, job_name: str) -> PlanRow | None:
        """The plan that named this job (job names are unique), if it was made here."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(plans).where(plans.c.job_name == job_name)).first()
        return None if row is None else _plan(row)

    def plans_in_state(self, state: str) -> list[PlanRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(plans).where(plans.c.state == state)).all()
        return [_plan(r) for r in rows]

    def follow_up_plans(self, parent: str) -> list[PlanRow]:
        """The plans of a job's follow-up rounds, first round first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(plans).where(plans.c.parent == parent).order_by(plans.c.round)
            ).all()
        return [_plan(r) for r in rows]

    # ------------------------------------------------------------------ adaptive chains

    def add_chain(
        self,
        *,
        root: str,
        project: str,
        region: str,
        policy: dict[str, Any],
        launched_by: str,
        channel: str,
        thread_ts: str | None,
    ) -> bool:
        """Record a job's adaptive policy as launched; False if it is recorded already."""
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(chains).values(
                        root=root,
                        project=project,
                        region=region,
                        policy=json.dumps(policy),
                        launched_by=launched_by,
                        channel=channel,
                        thread_ts=thread_ts,
                        state="active",
                        created_at=now,
                        updated_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def get_chain(self, root: str) -> ChainRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(chains).where(chains.c.root == root)).first()
        return None if row is None else _chain(row)

    def active_chains(self) -> list[ChainRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(chains).where(chains.c.state == "active")).all()
        return [_chain(r) for r in rows]

    def end_chain(self, root: str, state: str, reason: str, *, by: str | None = None) -> bool:
        """Compare-and-set from active: True for exactly one caller."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(chains)
                .where(chains.c.root == root, chains.c.state == "active")
                .values(state=state, reason=reason, stopped_by=by, updated_at=utcnow())
            )
        return result.rowcount == 1

    # ------------------------------------------------------------------ watches

    def add_watch(
        self,
        *,
        job_name: str,
        region: str,
        channel: str,
        project: str | None = None,
        message_ts: str | None = None,
        thread_ts: str | None = None,
        owner: str | None = None,
        job_created: datetime | None = None,
    ) -> bool:
        """Watch a job in a channel; False if it is already watched (re-attaching keeps state)."""
        now = utcnow()
        with self.engine.begin() as conn:
            existing = conn.execute(
                sa.select(watches.c.job_name).where(watches.c.job_name == job_name)
            ).first()
            if existing is not None:
                conn.execute(
                    sa.update(watches)
                    .where(watches.c.job_name == job_name)
                    .values(
                        channel=channel,
                        message_ts=message_ts,
                        thread_ts=thread_ts,
                        parked=False,
                        park_reason=None,
                        dm_only=False,
                        updated_at=now,
                        last_status=None,
                        last_counters=None,
                    )
                )
                return False
            conn.execute(
                sa.insert(watches).values(
                    job_name=job_name,
                    region=region,
                    project=project,
                    channel=channel,
                    message_ts=message_ts,
                    thread_ts=thread_ts,
                    owner=owner,
                    job_created=job_created,
                    completion_announced=False,
                    parked=False,
                    created_at=now,
                    updated_at=now,
                )
            )
        return True

    def add_subscriber(self, job_name: str, user: str) -> None:
        """`watch <job> --notify`: `user` is mentioned at the job's end (once, however often
        they ask)."""
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(subscribers.c.user_id).where(
                    subscribers.c.job_name == job_name, subscribers.c.user_id == user
                )
            ).first()
            if exists is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            sa.insert(subscribers).values(
                                job_name=job_name, user_id=user, created_at=utcnow()
                            )
                        )
                except sa.exc.IntegrityError:  # the same request twice at once
                    pass

    def subscribers(self, job_name: str) -> list[str]:
        """Who asked to be told about this job, first asker first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(subscribers.c.user_id)
                .where(subscribers.c.job_name == job_name)
                .order_by(subscribers.c.created_at, subscribers.c.user_id)
            ).all()
        return [str(r.user_id) for r in rows]

    def claim_stall(self, job_name: str) -> bool:
        """Compare-and-set: True for the one caller that tells this stall. Counts that move
        clear `stall_told_at` (with `progress_at`), so the next stall is told again."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(watches)
                .where(watches.c.job_name == job_name, watches.c.stall_told_at.is_(None))
                .values(stall_told_at=utcnow())
            )
        return result.rowcount == 1

    def remove_watch(self, job_name: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(watches).where(watches.c.job_name == job_name))
        return result.rowcount == 1

    def get_watch(self, job_name: str) -> WatchRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(watches).where(watches.c.job_name == job_name)).first()
        return None if row is None else _watch(row)

    def active_watches(self) -> list[WatchRow]:
        """Watches still worth polling: not parked and not yet announced as finished."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(watches).where(
                    watches.c.parked.is_(False), watches.c.completion_announced.is_(False)
                )
            ).all()
        return [_watch(r) for r in rows]

    def update_watch(self, job_name: str, **values: Any) -> None:
        if "last_counters" in values and values["last_counters"] is not None:
            values["last_counters"] = json.dumps(values["last_counters"], sort_keys=True)
        values["updated_at"] = utcnow()
        with self.engine.begin() as conn:
            conn.execute(sa.update(watches).where(watches.c.job_name == job_name).values(**values))

    # ------------------------------------------------------------------ announcements

    def get_announcement(self, job_name: str) -> AnnouncementRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(announcements).where(announcements.c.job_name == job_name)
            ).first()
        return None if row is None else _announcement(row)

    def claim_announcement(
        self,
        job_name: str,
        holder: str,
        stale_seconds: float,
        *,
        channel: str,
        thread_ts: str | None,
    ) -> AnnouncementRow | None:
        """Compare-and-set: one poster at a time may work on a job's announcement.

        The first claim creates the record with its destination, which then stays fixed. A
        claim left by a process that died goes stale after `stale_seconds` (the lease), so the
        rest of the steps are taken over rather than lost. None: done, or held by another.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(announcements)
                .where(
                    announcements.c.job_name == job_name,
                    announcements.c.state == "open",
                    sa.or_(
                        announcements.c.claimed_at.is_(None),
                        announcements.c.claimed_by == holder,
                        announcements.c.claimed_at < now - timedelta(seconds=stale_seconds),
                    ),
                )
                .values(claimed_at=now, claimed_by=holder, updated_at=now)
            )
            if result.rowcount == 0:
                exists = conn.execute(
                    sa.select(announcements.c.job_name).where(announcements.c.job_name == job_name)
                ).first()
                if exists is not None:
                    return None
                try:
                    with conn.begin_nested():
                        conn.execute(
                            sa.insert(announcements).values(
                                job_name=job_name,
                                channel=channel,
                                thread_ts=thread_ts,
                                steps=None,
                                state="open",
                                claimed_at=now,
                                claimed_by=holder,
                                created_at=now,
                                updated_at=now,
                            )
                        )
                except sa.exc.IntegrityError:
                    return None
            row = conn.execute(
                sa.select(announcements).where(announcements.c.job_name == job_name)
            ).one()
        return _announcement(row)

    def _held(self, job_name: str, holder: str, **values: Any) -> None:
        """Write to an announcement this holder still claims (renewing the claim), or raise."""
        now = utcnow()
        values.update(updated_at=now, claimed_at=values.get("claimed_at", now))
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(announcements)
                .where(
                    announcements.c.job_name == job_name,
                    announcements.c.claimed_by == holder,
                    announcements.c.state == "open",
                )
                .values(**values)
            )
        if result.rowcount != 1:
            raise ClaimLost(job_name)

    def renew_announcement(self, job_name: str, holder: str) -> None:
        """Keep a claim fresh while its results are built (raises ClaimLost if it was taken)."""
        self._held(job_name, holder)

    def save_steps(self, job_name: str, holder: str, steps: list[dict[str, Any]]) -> None:
        """Record the steps' progress; each call also renews the claim."""
        self._held(job_name, holder, steps=json.dumps(steps))

    def finish_announcement(self, job_name: str, holder: str) -> None:
        """Every step is done or given up: never again for this job, in any channel."""
        self._held(job_name, holder, state="done", claimed_at=None, claimed_by=None)
        self.update_watch(job_name, completion_announced=True)

    def release_announcement(self, job_name: str, holder: str) -> None:
        """Give up the claim (a step failed for now), so the next tick takes it up again."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(announcements)
                .where(announcements.c.job_name == job_name, announcements.c.claimed_by == holder)
                .values(claimed_at=None, claimed_by=None, updated_at=utcnow())
            )

    # ------------------------------------------------------------------ health

    def check_writable(self, timeout_seconds: float = 2.0) -> None:
        """Raise unless the database takes a write within `timeout_seconds` (not read-only,
        not full, not locked by another writer): what a health check must know."""
        wait_ms = int(timeout_seconds * 1000)
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
            try:
                if conn.dialect.name == "postgresql":
                    # The statement's time includes its wait for locks, so this one bound covers
                    # another writer too (PostgreSQL's runtime-config-client page: a lock_timeout
                    # as large as statement_timeout is "rather pointless"). LOCAL: this
                    # transaction only, not the pooled connection's later work.
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {wait_ms}")
                # SQLite leaves a page alone when a row is rewritten as it was, so writing the
                # same value commits nothing and a full disk goes unseen: change the row, then
                # put it back, in one transaction.
                row = sa.update(schema_version).where(schema_version.c.id == 1)
                conn.execute(row.values(version=schema_version.c.version + 1))
                conn.execute(row.values(version=schema_version.c.version - 1))
                conn.commit()
            finally:
                conn.rollback()
                if sqlite:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")

    # ------------------------------------------------------------------ lease

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lease if free, expired, or already ours. One holder at a time."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl_seconds)
        with self.engine.begin() as conn:
            updated = conn.execute(
                sa.update(leases)
                .where(
                    leases.c.name == name,
                    sa.or_(leases.c.holder == holder, leases.c.expires_at < now),
                )
                .values(holder=holder, expires_at=expires)
            )
            if updated.rowcount == 1:
                return True
            exists = conn.execute(sa.select(leases.c.name).where(leases.c.name == name)).first()
            if exists is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(
                        sa.insert(leases).values(name=name, holder=holder, expires_at=expires)
                    )
            except sa.exc.IntegrityError:
                # Another replica inserted the first row since our SELECT (PostgreSQL: an
                # UPDATE of no row locks nothing; SQLite's UPDATE already took the write lock).
                return False
        return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder))

    def lease_holder(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.name == name)).first()
        if row is None or (_aware(row.expires_at) or utcnow()) < utcnow():
            return None
        return str(row.holder)

    def iter_all_watches(self) -> Iterator[WatchRow]:
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(watches)).all():
                yield _watch(row)


def _plan(row: Any) -> PlanRow:
    return PlanRow(
        id=row.id,
        project=row.project,
        region=row.region,
        job_name=row.job_name,
        requested_by=row.requested_by,
        channel=row.channel,
        message_ts=row.message_ts,
        state=row.state,
        summary=json.loads(row.summary),
        request=json.loads(row.request),
        decided_by=row.decided_by,
        error=row.error,
        created_at=_aware(row.created_at) or utcnow(),
        updated_at=_aware(row.updated_at) or utcnow(),
        manifest_sha256=row.manifest_sha256,
        parent=row.parent,
        round=row.round,
        thread_ts=row.thread_ts,
    )


def _chain(row: Any) -> ChainRow:
    return ChainRow(
        root=row.root,
        project=row.project,
        region=row.region,
        policy=json.loads(row.policy),
        launched_by=row.launched_by,
        channel=row.channel,
        thread_ts=row.thread_ts,
        state=row.state,
        reason=row.reason,
        stopped_by=row.stopped_by,
    )


def _announcement(row: Any) -> AnnouncementRow:
    return AnnouncementRow(
        job_name=row.job_name,
        channel=row.channel,
        thread_ts=row.thread_ts,
        steps=json.loads(row.steps) if row.steps is not None else None,
        state=row.state,
        claimed_by=row.claimed_by,
    )


def _watch(row: Any) -> WatchRow:
    return WatchRow(
        job_name=row.job_name,
        region=row.region,
        project=row.project,
        channel=row.channel,
        message_ts=row.message_ts,
        thread_ts=row.thread_ts,
        owner=row.owner,
        job_created=_aware(row.job_created),
        last_status=row.last_status,
        last_counters=json.loads(row.last_counters) if row.last_counters else None,
        completion_announced=bool(row.completion_announced),
        parked=bool(row.parked),
        park_reason=row.park_reason,
        created_at=_aware(row.created_at) or utcnow(),
        progress_at=_aware(row.progress_at),
        stall_told_at=_aware(row.stall_told_at),
        dm_only=bool(row.dm_only),
    )
