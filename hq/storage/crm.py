"""The reader tier's SQL, shared by both backends: CRM tables, retention, the audit log.

Why here and not in `hq.reader`/`hq.retention`: those modules decide (what to decrypt, which
instants are the 2-, 5- and 10-year lines); this one only stores, in transactions, so that
a crash never leaves a purchase without its items or an unlink half done. Retention is one
transaction: the DPO's counts are exactly what happened, and a dry run is the same
statements rolled back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

from hq.storage.base import (
    AuditEntry,
    CrmItem,
    CrmPurchase,
    EnvelopeRef,
    ItemRow,
    ReadMark,
    RetentionCounts,
    RetentionCutoffs,
    SealedEnvelope,
)
from hq.storage.sql import SqlBase, chunks, marks

_PURCHASE_COLUMNS = (
    "event_id, card, occurred_ms, occurred_at, store, terminal, receipt, currency, total, "
    "src_terminal, src_stream, src_seq, enc_kid, consent_decided_at, consent_latency_ms"
)

#: An envelope (chained, below its stream's tip) that retention may delete.
_EXPIRED_ENVELOPE = (
    "e.ts < ? AND EXISTS (SELECT 1 FROM streams s WHERE s.terminal = e.terminal "
    "AND s.stream = e.stream AND e.seq {op} s.acked_through)"
)


class CrmSql(SqlBase):
    """`CrmStore` over the shared SQL (see module doc)."""

    # --- reading envelopes into the CRM ----------------------------------------------------

    def unread_envelopes(
        self, readable_kids: Collection[str], after: EnvelopeRef | None, limit: int
    ) -> list[SealedEnvelope]:
        kids = sorted(readable_kids)
        retry = f"OR (r.state = 'no-key' AND e.enc_kid IN ({marks(len(kids))}))" if kids else ""
        position, params = "", list[object](kids)
        if after is not None:
            position = "AND (e.terminal, e.stream, e.seq) > (?, ?, ?) "
            params += [after.terminal, after.stream, after.seq]
        rows = self.rows(
            "SELECT e.terminal, e.stream, e.seq, e.enc_kid, e.body FROM envelopes e "  # noqa: S608
            "LEFT JOIN crm_read r ON r.terminal = e.terminal AND r.stream = e.stream "
            "AND r.seq = e.seq "
            f"WHERE e.kind = 'purchase' AND length(e.body) > 0 AND (r.state IS NULL {retry}) "
            f"{position}ORDER BY e.terminal, e.stream, e.seq LIMIT ?",
            (*params, limit),
        )
        return [
            SealedEnvelope(EnvelopeRef(t, bytes(s), int(seq)), kid, bytes(body))
            for t, s, seq, kid, body in rows
        ]

    def save_read(self, purchases: Sequence[CrmPurchase], marks_: Sequence[ReadMark]) -> int:
        now = self._now()
        inserted = 0
        with self._tx():
            for p in purchases:
                if p.card is not None:
                    self.execute(
                        "INSERT INTO crm_households (card) VALUES (?) "
                        "ON CONFLICT (card) DO NOTHING",
                        (p.card,),
                    )
                self.execute(
                    "INSERT INTO crm_stores (store, first_seen_ms, last_seen_ms) "  # noqa: S608
                    "VALUES (?, ?, ?) ON CONFLICT (store) DO UPDATE SET "
                    f"first_seen_ms = {self.least}(crm_stores.first_seen_ms, "
                    "excluded.first_seen_ms), "
                    f"last_seen_ms = {self.greatest}(crm_stores.last_seen_ms, "
                    "excluded.last_seen_ms)",
                    (p.store, p.occurred_ms, p.occurred_ms),
                )
                src = p.source
                added = self.execute(
                    f"INSERT INTO crm_purchases ({_PURCHASE_COLUMNS}, read_at, unlinked_at) "  # noqa: S608
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (event_id) DO NOTHING",
                    (
                        p.event_id,
                        p.card,
                        p.occurred_ms,
                        p.occurred_at,
                        p.store,
                        p.terminal,
                        p.receipt,
                        p.currency,
                        p.total,
                        None if src is None else src.terminal,
                        None if src is None else src.stream,
                        None if src is None else src.seq,
                        p.enc_kid,
                        p.consent_decided_at,
                        p.consent_latency_ms,
                        now,
                        None if p.card is not None else now,
                    ),
                )
                if added:
                    inserted += 1
                    self.executemany(
                        "INSERT INTO crm_items (event_id, line, gtin, qty, amount) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(p.event_id, i.line, i.gtin, i.qty, i.amount) for i in p.items],
                    )
            if marks_:
                self.executemany(
                    "INSERT INTO crm_read (terminal, stream, seq, state, at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (terminal, stream, seq) DO UPDATE "
                    "SET state = excluded.state, at = excluded.at",
                    [(m.ref.terminal, m.ref.stream, m.ref.seq, m.state, now) for m in marks_],
                )
        return inserted

    # --- right of access, statistics ---------------------------------------------------------

    def card_purchases(self, card: str, since_ms: int, until_ms: int) -> list[CrmPurchase]:
        rows = self.rows(
            f"SELECT {_PURCHASE_COLUMNS} FROM crm_purchases "  # noqa: S608
            "WHERE card = ? AND occurred_ms >= ? AND occurred_ms <= ? "
            "ORDER BY occurred_ms, event_id",
            (card, since_ms, until_ms),
        )
        items: dict[str, list[CrmItem]] = {}
        ids = [r[0] for r in rows]
        for chunk in chunks(ids):
            for event_id, line, gtin, qty, amount in self.rows(
                "SELECT event_id, line, gtin, qty, amount FROM crm_items "  # noqa: S608
                f"WHERE event_id IN ({marks(len(chunk))}) ORDER BY event_id, line",
                chunk,
            ):
                items.setdefault(event_id, []).append(
                    CrmItem(int(line), gtin, int(qty), int(amount))
                )
        out = []
        for r in rows:
            src = None if r[9] is None else EnvelopeRef(r[9], bytes(r[10]), int(r[11]))
            out.append(
                CrmPurchase(
                    event_id=r[0],
                    card=r[1],
                    occurred_ms=int(r[2]),
                    occurred_at=r[3],
                    store=r[4],
                    terminal=r[5],
                    receipt=r[6],
                    currency=r[7],
                    total=int(r[8]),
                    items=tuple(items.get(r[0], ())),
                    source=src,
                    enc_kid=r[12],
                    consent_decided_at=r[13],
                    consent_latency_ms=None if r[14] is None else int(r[14]),
                )
            )
        return out

    def item_rows(self, since_ms: int, until_ms: int) -> Iterator[ItemRow]:
        for event_id, store, occurred, card, gtin, qty, amount in self.iterate(
            "SELECT p.event_id, p.store, p.occurred_ms, p.card, i.gtin, i.qty, i.amount "
            "FROM crm_purchases p JOIN crm_items i ON i.event_id = p.event_id "
            "WHERE p.occurred_ms >= ? AND p.occurred_ms < ? ORDER BY p.occurred_ms, i.line",
            (since_ms, until_ms),
        ):
            yield ItemRow(event_id, store, int(occurred), card, gtin, int(qty), int(amount))

    # --- retention -------------------------------------------------------------------------

    def apply_retention(self, cutoffs: RetentionCutoffs, *, dry_run: bool) -> RetentionCounts:
        c = cutoffs
        with self._tx(rollback=dry_run):
            items = self.execute(
                "DELETE FROM crm_items WHERE event_id IN "
                "(SELECT event_id FROM crm_purchases WHERE occurred_ms < ?)",
                (c.delete_ms,),
            )
            deleted = self.execute(
                "DELETE FROM crm_purchases WHERE occurred_ms < ?", (c.delete_ms,)
            )
            unlinked = self.execute(
                "UPDATE crm_purchases SET card = NULL, src_terminal = NULL, src_stream = NULL, "
                "src_seq = NULL, enc_kid = NULL, consent_decided_at = NULL, "
                "consent_latency_ms = NULL, unlinked_at = ? "
                "WHERE occurred_ms < ? AND unlinked_at IS NULL",
                (c.now, c.unlink_ms),
            )
            households = self.execute(
                "DELETE FROM crm_households WHERE NOT EXISTS "
                "(SELECT 1 FROM crm_purchases p WHERE p.card = crm_households.card)"
            )
            never_read = self.rows(
                "SELECT COUNT(*) FROM envelopes e WHERE e.kind = 'purchase' "  # noqa: S608
                f"AND length(e.body) > 0 AND {_EXPIRED_ENVELOPE.format(op='<=')} "
                "AND NOT EXISTS (SELECT 1 FROM crm_read r WHERE r.terminal = e.terminal "
                "AND r.stream = e.stream AND r.seq = e.seq AND r.state IN ('read', 'expired'))",
                (c.envelope_ts,),
            )[0][0]
            envelopes = self.execute(
                f"DELETE FROM envelopes AS e WHERE {_EXPIRED_ENVELOPE.format(op='<')}",  # noqa: S608
                (c.envelope_ts,),
            )
            tips = self.execute(  # the tip's hash must stay: the stream's next prev links to it
                "UPDATE envelopes AS e SET body = ? WHERE length(e.body) > 0 AND "  # noqa: S608
                f"{_EXPIRED_ENVELOPE.format(op='=')}",
                (b"", c.envelope_ts),
            )
            self.execute(
                "DELETE FROM crm_read WHERE NOT EXISTS (SELECT 1 FROM envelopes e WHERE "
                "e.terminal = crm_read.terminal AND e.stream = crm_read.stream "
                "AND e.seq = crm_read.seq)"
            )
            rejections = self.execute("DELETE FROM rejections WHERE at < ?", (c.envelope_ts,))
        return RetentionCounts(
            purchases_unlinked=unlinked,
            purchases_deleted=deleted,
            items_deleted=items,
            households_deleted=households,
            envelopes_deleted=envelopes,
            envelope_tips_emptied=tips,
            envelopes_never_read=int(never_read),
            rejections_deleted=rejections,
        )

    def envelope_kids(self) -> dict[str, int]:
        rows = self.rows(
            "SELECT enc_kid, COUNT(*) FROM envelopes WHERE length(body) > 0 GROUP BY enc_kid"
        )
        return {kid: int(n) for kid, n in rows}

    # --- audit log -------------------------------------------------------------------------

    def audit(self, action: str, actor: str, detail: str) -> None:
        with self._tx():
            self.execute(
                "INSERT INTO audit_log (at, action, actor, detail) VALUES (?, ?, ?, ?)",
                (self._now(), action, actor, detail),
            )

    def audit_log(self, action: str | None = None) -> list[AuditEntry]:
        where, params = ("WHERE action = ? ", (action,)) if action is not None else ("", ())
        rows = self.rows(
            f"SELECT id, at, action, actor, detail FROM audit_log {where}ORDER BY id",  # noqa: S608
            params,
        )
        return [AuditEntry(int(i), int(at), a, who, d) for i, at, a, who, d in rows]
