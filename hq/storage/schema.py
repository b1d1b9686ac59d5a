"""HQ's schema as named, ordered migrations, written once for SQLite and PostgreSQL.

Why one text for two databases: the two backends must hold the same tables with the same
meaning, or the shared test-suite would prove nothing. The DDL uses three placeholders that
each dialect fills in (`{blob}`, `{int}`, `{serial}`); everything else is SQL both accept.
A migration is a name and a list of steps; a step is DDL text or a function run inside the
migration's transaction (data back-fills). Backends record how many migrations ran
(SQLite: `PRAGMA user_version`; PostgreSQL: the `hq_schema` table) and refuse a database
written by a newer HQ.

Migration 1 is the ingest tier as it shipped with the SQLite-only receiver; migration 2 adds
the reader tier (CRM tables, read marks), the audit log and `envelopes.enc_kid`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from agent.envelope import DecodeError, decode

#: Column types per dialect: BLOB/BYTEA for bytes, 64-bit integers, an identity key.
TYPES: Final[dict[str, dict[str, str]]] = {
    "sqlite": {
        "blob": "BLOB",
        "int": "INTEGER",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    },
    "postgresql": {
        "blob": "BYTEA",
        "int": "BIGINT",
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    },
}


class Executor:
    """What a migration function may do: run one statement, read rows (backend-provided)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:  # pragma: no cover
        raise NotImplementedError

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # pragma: no cover


Step = str | Callable[[Executor], None]


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    steps: tuple[Step, ...]


INGEST_TABLES = """
CREATE TABLE terminals (
    terminal    TEXT PRIMARY KEY,
    enrolled_at {int} NOT NULL
);
CREATE TABLE terminal_keys (
    terminal    TEXT NOT NULL REFERENCES terminals (terminal),
    sig_kid     TEXT NOT NULL,
    public_key  {blob} NOT NULL UNIQUE,
    enrolled_at {int} NOT NULL,
    PRIMARY KEY (terminal, sig_kid)
);
CREATE TABLE streams (
    terminal      TEXT NOT NULL,
    stream        {blob} NOT NULL,
    acked_through {int} NOT NULL,
    first_seen    {int} NOT NULL,
    updated_at    {int} NOT NULL,
    PRIMARY KEY (terminal, stream)
);
CREATE TABLE envelopes (
    terminal    TEXT NOT NULL,
    stream      {blob} NOT NULL,
    seq         {int} NOT NULL,
    kind        TEXT NOT NULL,
    ts          {int} NOT NULL,
    prev        {blob} NOT NULL,
    hash        {blob} NOT NULL,
    body        {blob} NOT NULL,
    received_at {int} NOT NULL,
    chained     {int} NOT NULL,
    PRIMARY KEY (terminal, stream, seq)
);
CREATE INDEX envelopes_by_kind_ts ON envelopes (kind, ts);
CREATE TABLE purges (
    terminal    TEXT NOT NULL,
    stream      {blob} NOT NULL,
    purge_seq   {int} NOT NULL,
    first_seq   {int} NOT NULL,
    last_seq    {int} NOT NULL,
    last_hash   {blob} NOT NULL,
    received_at {int} NOT NULL,
    PRIMARY KEY (terminal, stream, purge_seq)
);
CREATE TABLE rejections (
    id       {serial},
    at       {int} NOT NULL,
    terminal TEXT NOT NULL,
    stream   {blob} NOT NULL,
    seq      {int} NOT NULL,
    code     TEXT NOT NULL,
    detail   TEXT NOT NULL,
    evidence {blob}
);
CREATE INDEX rejections_by_terminal ON rejections (terminal, stream, seq)
"""

READER_TABLES = """
ALTER TABLE envelopes ADD COLUMN enc_kid TEXT NOT NULL DEFAULT '';
CREATE INDEX envelopes_by_enc_kid ON envelopes (enc_kid);
CREATE INDEX rejections_by_time ON rejections (at);
CREATE TABLE crm_households (
    card TEXT PRIMARY KEY
);
CREATE TABLE crm_stores (
    store        TEXT PRIMARY KEY,
    first_seen_ms {int} NOT NULL,
    last_seen_ms  {int} NOT NULL
);
CREATE TABLE crm_purchases (
    event_id           TEXT PRIMARY KEY,
    card               TEXT REFERENCES crm_households (card),
    occurred_ms        {int} NOT NULL,
    occurred_at        TEXT NOT NULL,
    store              TEXT NOT NULL REFERENCES crm_stores (store),
    terminal           TEXT NOT NULL,
    receipt            TEXT NOT NULL,
    currency           TEXT NOT NULL,
    total              {int} NOT NULL,
    src_terminal       TEXT,
    src_stream         {blob},
    src_seq            {int},
    enc_kid            TEXT,
    consent_decided_at TEXT,
    consent_latency_ms {int},
    read_at            {int} NOT NULL,
    unlinked_at        {int}
);
CREATE INDEX crm_purchases_by_card ON crm_purchases (card, occurred_ms);
CREATE INDEX crm_purchases_by_time ON crm_purchases (occurred_ms);
CREATE TABLE crm_items (
    event_id TEXT NOT NULL REFERENCES crm_purchases (event_id) ON DELETE CASCADE,
    line     {int} NOT NULL,
    gtin     TEXT NOT NULL,
    qty      {int} NOT NULL,
    amount   {int} NOT NULL,
    PRIMARY KEY (event_id, line)
);
CREATE TABLE crm_read (
    terminal TEXT NOT NULL,
    stream   {blob} NOT NULL,
    seq      {int} NOT NULL,
    state    TEXT NOT NULL,
    at       {int} NOT NULL,
    PRIMARY KEY (terminal, stream, seq)
);
CREATE TABLE audit_log (
    id     {serial},
    at     {int} NOT NULL,
    action TEXT NOT NULL,
    actor  TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_by_action ON audit_log (action, at)
"""


def _backfill_enc_kid(db: Executor) -> None:
    """Envelopes stored before migration 2 get their `enc_kid` from their own header."""
    for terminal, stream, seq, body in db.rows(
        "SELECT terminal, stream, seq, body FROM envelopes WHERE enc_kid = ''"
    ):
        try:
            kid = decode(bytes(body)).header.enc_kid
        except DecodeError:  # pragma: no cover - the ingest tier stored only decodable bytes
            continue
        db.execute(
            "UPDATE envelopes SET enc_kid = ? WHERE terminal = ? AND stream = ? AND seq = ?",
            (kid, terminal, bytes(stream), seq),
        )


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration("initial", (INGEST_TABLES,)),
    Migration("reader-tier", (READER_TABLES, _backfill_enc_kid)),
)


def statements(step: str, dialect: str) -> list[str]:
    """The DDL of one step for `dialect`, statement by statement (`executescript` would
    commit the migration's transaction on SQLite)."""
    text = step.format(**TYPES[dialect])
    return [s.strip() for s in text.split(";") if s.strip()]


def apply(migration: Migration, dialect: str, db: Executor) -> None:
    for step in migration.steps:
        if isinstance(step, str):
            for statement in statements(step, dialect):
                db.execute(statement)
        else:
            step(db)
