"""The store's tables (SQLAlchemy Core). Alembic migrations under ``migrations/`` create them;
this module is what queries are written against. Change both together."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

flight = Table(
    "flight",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("branch", String(200), nullable=False),
    Column("blessing", String(20), nullable=False),
    Column("state", String(20), nullable=False),
    Column("outcome", String(20)),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("started", DateTime(timezone=True)),
    Column("finished", DateTime(timezone=True)),
    Index("ix_flight_branch", "branch", "id"),
    # under embargo (migration 0011): seen only by the group's members until embargo_until
    # (lifting the embargo sets it to now); both NULL for a public flight
    Column("embargo_group", String(200)),
    Column("embargo_until", DateTime(timezone=True)),
    # on-demand work (migration 0013): the community user who submitted it (NULL: the lab's
    # own), and whether only they (and the lab admin) see it
    Column("owner", String(200)),
    Column("owner_only", Boolean, nullable=False, server_default=false()),
    Index("ix_flight_owner", "owner", "id"),
)

flight_revision = Table(
    "flight_revision",
    metadata,
    Column("flight_id", Integer, ForeignKey("flight.id", ondelete="CASCADE"), primary_key=True),
    Column("tree", String(200), primary_key=True),
    Column("sha", String(64), nullable=False),
)

job = Table(
    "job",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flight_id", Integer, ForeignKey("flight.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(300), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("host", String(200)),
    Column("requires", Text, nullable=False),
    Column("depends", Text, nullable=False),
    Column("exclusive", Boolean, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("reason", Text),
    Column("started", DateTime(timezone=True)),
    Column("finished", DateTime(timezone=True)),
    UniqueConstraint("flight_id", "name", name="uq_job_flight_name"),
    Index("ix_job_name", "name", "flight_id"),
)

runvar = Table(
    "runvar",
    metadata,
    Column("job_id", Integer, ForeignKey("job.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

step = Table(
    "step",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("job.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(300), nullable=False),
    Column("command", Text, nullable=False),
    Column("timeout", Float),
    Column("results", Text),
    Column("outcome", String(20), nullable=False),
    Column("exit_status", Integer),
    Column("duration_s", Float),
    Column("log", Text),
    Column("reason", Text),
    Column("started", DateTime(timezone=True)),
    Column("finished", DateTime(timezone=True)),
    UniqueConstraint("job_id", "seq", name="uq_step_job_seq"),
    Column("metrics", Text),  # migration 0012: "json:<glob>"
    Column("repeat", Integer),  # migration 0012: runs in one job; NULL: 1
)

testcase = Table(
    "testcase",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("step_id", Integer, ForeignKey("step.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("duration_s", Float),
    Column("message", Text),
    Index("ix_testcase_step", "step_id"),
)

host = Table(
    "host",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("flags", Text, nullable=False),
    Column("slots", Integer, nullable=False),
    Column("executor", String(40), nullable=False),
)

allocation = Table(
    "allocation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("job.id", ondelete="CASCADE"), nullable=False),
    Column("host", String(200), nullable=False),
    Column("slots", Integer, nullable=False),
    Column("started", DateTime(timezone=True), nullable=False),
    Column("released", DateTime(timezone=True)),
    Index("ix_allocation_host", "host", "released"),
)

branch_state = Table(
    "branch_state",
    metadata,
    Column("branch", String(200), primary_key=True),
    Column("baseline_flight_id", Integer, ForeignKey("flight.id")),
    Column("gate_owner", String(200)),
    Column("gate_lease_until", DateTime(timezone=True)),
    Column("updated", DateTime(timezone=True), nullable=False),
)

push = Table(
    "push",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("branch", String(200), nullable=False),
    Column("flight_id", Integer, ForeignKey("flight.id"), nullable=False),
    Column("tree", String(200), nullable=False),
    Column("sha", String(64), nullable=False),
    Column("previous_sha", String(64)),
    Column("status", String(40), nullable=False),
    Column("message", Text),
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_push_branch", "branch", "id"),
)

verdict = Table(
    "verdict",
    metadata,
    Column("flight_id", Integer, ForeignKey("flight.id", ondelete="CASCADE"), primary_key=True),
    Column("baseline_flight_id", Integer),
    Column("push_allowed", Boolean, nullable=False),
    Column("data", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    # migration 0016: how many regressions (and blocking slowdowns) stop the push
    Column("regressions", Integer),
)

bisection = Table(
    "bisection",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("branch", String(200), nullable=False),
    Column("job", String(300), nullable=False),
    Column("step", String(300)),
    Column("testcase", Text),
    Column("flight_id", Integer, ForeignKey("flight.id"), nullable=False),
    Column("baseline_flight_id", Integer, ForeignKey("flight.id")),
    Column("state", String(20), nullable=False),
    Column("culprit_tree", String(200)),
    Column("culprit_commit", String(64)),
    Column("confidence", Float),
    Column("executions", Integer, nullable=False),
    Column("rounds", Integer, nullable=False),
    Column("reason", Text),
    Column("flights", Text, nullable=False),
    Column("graph", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("finished", DateTime(timezone=True)),
    Index("ix_bisection_branch", "branch", "id"),
)

# --- the dashboard (migration 0003) ---------------------------------------------------------

cancel_request = Table(
    "cancel_request",
    metadata,
    Column("flight_id", Integer, ForeignKey("flight.id", ondelete="CASCADE"), primary_key=True),
    Column("requested", DateTime(timezone=True), nullable=False),
    Column("source", String(200), nullable=False),
)

Index("ix_job_host", job.c.host, job.c.id)
Index("ix_push_flight", push.c.flight_id)
Index("ix_bisection_flight", bisection.c.flight_id)
Index("ix_flight_blessing", flight.c.blessing, flight.c.id)
Index("ix_flight_outcome", flight.c.outcome, flight.c.id)

# --- real hosts (migration 0004) ---------------------------------------------------------

host_status = Table(
    "host_status",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("quarantined", Text),  # the reason; NULL when the host is in service
    Column("quarantined_at", DateTime(timezone=True)),
    Column("broken_streak", Integer, nullable=False),
    Column("reserved_by", String(200)),
    Column("reserved_reason", Text),
    Column("reserved_until", DateTime(timezone=True)),
    Column("updated", DateTime(timezone=True), nullable=False),
)

host_event = Table(
    "host_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(200), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("job_id", Integer),
    Column("attempt", Integer),
    Column("outcome", String(20)),
    Column("reason", Text),
    Column("data", Text),  # JSON: e.g. the steps of an attempt lost with its host
    Index("ix_host_event_host", "host", "id"),
)

slot_lease = Table(
    "slot_lease",
    metadata,
    Column("host", String(200), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("job_id", Integer),
    Column("owner", String(200)),
    Column("lease_until", DateTime(timezone=True)),
    Index("ix_slot_lease_owner", "owner"),
    Index("ix_slot_lease_job", "job_id"),
)

Index("ix_job_outcome", job.c.outcome, job.c.id)

# --- code review (labgate.review) -----------------------------------------------------------

review_run = Table(
    "review_run",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("connector", String(200), nullable=False),
    Column("change", String(200), nullable=False),
    Column("patchset", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("project", String(300), nullable=False),
    Column("ref", String(300), nullable=False),
    Column("revision", String(64), nullable=False),
    Column("target", String(300), nullable=False),
    Column("url", Text),
    Column("state", String(20), nullable=False),
    Column("owner", String(200)),
    Column("lease_until", DateTime(timezone=True)),
    Column("flight_id", Integer, ForeignKey("flight.id")),
    Column("vote", Integer),
    Column("voting", Boolean),
    Column("message", Text),
    Column("vote_state", String(20)),
    Column("retest", Boolean, nullable=False, default=False),
    Column("reason", Text),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    Column("patchset_created", DateTime(timezone=True)),
    Column("report_id", String(200)),
    UniqueConstraint("connector", "change", "patchset", "attempt", name="uq_review_run"),
    Index("ix_review_run_state", "state", "id"),
    Index("ix_review_run_revision", "connector", "revision"),
)

review_delivery = Table(
    "review_delivery",
    metadata,
    Column("connector", String(200), primary_key=True),
    Column("delivery", String(200), primary_key=True),
    Column("event", String(100), nullable=False),
    Column("received", DateTime(timezone=True), nullable=False),
)

review_vote = Table(
    "review_vote",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("connector", String(200), nullable=False),
    Column("revision", String(64), nullable=False),
    Column("change", String(200), nullable=False),
    Column("patchset", String(200), nullable=False),
    Column("account", String(300), nullable=False),
    Column("label", String(100), nullable=False),
    Column("value", Integer, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    UniqueConstraint("connector", "revision", "account", "label", name="uq_review_vote"),
)

# --- the pool of controllers (migration 0006) ---------------------------------------------

pool_flight = Table(
    "pool_flight",
    metadata,
    Column("flight_id", Integer, ForeignKey("flight.id", ondelete="CASCADE"), primary_key=True),
    Column("submitted", DateTime(timezone=True), nullable=False),
    # job name -> a host to keep it off if another can take it (JSON)
    Column("avoid", Text, nullable=False, server_default="{}"),
)

Index("ix_host_event_job", host_event.c.job_id)
Index("ix_job_flight_outcome", job.c.flight_id, job.c.outcome)

# --- embargoed flights, users, groups, tokens (migration 0011) -------------------------------

lab_user = Table(
    "lab_user",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("email", String(300)),
    Column("created", DateTime(timezone=True), nullable=False),
)

user_group = Table(
    "user_group",
    metadata,
    Column("user", String(200), ForeignKey("lab_user.name", ondelete="CASCADE"), primary_key=True),
    Column("group", String(200), primary_key=True),
    Column("admin", Boolean, nullable=False, default=False),
    Index("ix_user_group_group", "group"),
)

api_token = Table(
    "api_token",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(200), ForeignKey("lab_user.name", ondelete="CASCADE"), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),  # SHA-256 of the token, hex
    Column("created", DateTime(timezone=True), nullable=False),
    Column("revoked", DateTime(timezone=True)),
    Column("expires", DateTime(timezone=True)),  # migration 0013; NULL: never
)

embargo_audit = Table(
    "embargo_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(200), nullable=False),
    Column("flight_id", Integer, ForeignKey("flight.id", ondelete="CASCADE"), nullable=False),
    Column("group", String(200), nullable=False),
    Column("what", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_embargo_audit_group", "group", "id"),
)


# --- static analysis findings (migration 0010) ----------------------------------------------

finding = Table(
    "finding",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flight_id", Integer, ForeignKey("flight.id", ondelete="CASCADE"), nullable=False),
    Column("step_id", Integer, ForeignKey("step.id", ondelete="CASCADE"), nullable=False),
    Column("job", String(300), nullable=False),
    Column("step", String(300), nullable=False),
    Column("tool", String(200), nullable=False),
    Column("rule", String(300), nullable=False),
    Column("level", String(20), nullable=False),
    Column("message", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("line", Integer),
    Column("col", Integer),
    Column("function", Text, nullable=False),
    Column("identity", String(64), nullable=False),
    Column("snippet_key", String(64), nullable=False),
    Index("ix_finding_flight", "flight_id", "job", "step"),
    Index("ix_finding_step", "step_id"),
    Index("ix_finding_identity", "identity"),
)

finding_triage = Table(
    "finding_triage",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column("state", String(40), nullable=False),
    Column("reason", Text, nullable=False),
    Column("by", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

finding_blame = Table(
    "finding_blame",
    metadata,
    Column("flight_id", Integer, ForeignKey("flight.id", ondelete="CASCADE"), primary_key=True),
    Column("identity", String(64), primary_key=True),
    Column("tree", String(200), nullable=False),
    Column("commit", String(64), nullable=False),
    Column("author", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("flights", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)


# --- performance metrics (migration 0012) --------------------------------------------------

metric = Table(
    "metric",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("step_id", Integer, ForeignKey("step.id", ondelete="CASCADE"), nullable=False),
    Column("run", Integer, nullable=False),  # which of the step's repeats, from 1
    Column("name", String(200), nullable=False),
    Column("value", Float, nullable=False),
    Column("unit", String(40), nullable=False),
    Column("lower_is_better", Boolean, nullable=False),
    Column("host", String(200), nullable=False),
    Column("host_class", String(400), nullable=False),  # the host's equiv-* flags, or its name
    Index("ix_metric_step", "step_id"),
    Index("ix_metric_name", "name", "host_class"),
)


# --- access requests (migration 0013) --------------------------------------------------------

access_request = Table(
    "access_request",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("email", String(300), nullable=False),
    Column("affiliation", String(300), nullable=False),
    Column("why", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    # pending, approved or refused; a decision is written once, with who, when and why
    Column("state", String(20), nullable=False),
    Column("decided_by", String(200)),
    Column("decided", DateTime(timezone=True)),
    Column("decision_why", Text),
    Column("user", String(200)),  # the user an approval made
    Column("group", String(200)),
    Index("ix_access_request_state", "state", "id"),
)


# --- on-demand host time (migration 0018) -----------------------------------------------------

host_time = Table(
    "host_time",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(200), nullable=False),
    Column("host", String(200), nullable=False),
    # the window reserved; a reservation ended early (released, or reserved again) ends at the
    # host's next release or reserve event (host_event), which usage reads
    Column("start", DateTime(timezone=True), nullable=False),
    Column("until", DateTime(timezone=True), nullable=False),
    Index("ix_host_time_user", "user", "until"),
)
