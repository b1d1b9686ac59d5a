"""Verification at the ingest tier, exactly as envelope-v1 says ("Verification at the
ingest tier"), with no HTTP and no SQL in it.

The order of checks per envelope is the spec's: decodes deterministically; `v == 1`;
terminal enrolled and `sig_kid` registered; signature; seq next expected or already stored
(identical: duplicate, acknowledged; different: FORK); `prev` links to seq - 1 (or to a purged
range's `last_hash`). A purge envelope is accepted ahead of its turn on its signature alone;
its own `prev` is checked when its turn comes.

Shape (h11's habit): the checks that need no stream state run first (`read_element`,
`check_batch`, `check_keys`); then `decide` is a pure function from a `StreamSnapshot` to a
`StreamUpdate`, which the storage backend runs inside the one transaction that applies it.
Decisions the spec leaves open, made here (docs/hq.md says why):
- An unregistered `sig_kid` refuses the WHOLE request with 403 (not a per-envelope
  rejection): after a key rotation the terminal must retry once the new key is enrolled,
  and must not dead-letter envelopes that are fine.
- Elements that do not decode are rejected by seq when the seq can still be read from them
  (so the terminal can act on it); otherwise the request is malformed (400).
- Purge envelopes ahead of their turn are taken first within a batch.
- An envelope inside an already explained range that HQ does not hold is `purged`, not
  stored; a purge whose `prev` fails when its turn comes is removed (its range stays
  explained: `acked_through` never moves back).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.envelope import (
    ZERO_HASH,
    DecodeError,
    Envelope,
    SignatureError,
    decode,
    envelope_hash,
    verify,
)
from agent.envelope.model import TERMINAL_RE, VERSION
from hq.errors import Forbidden, Malformed
from hq.storage import (
    MAX_SEQ,
    AheadPurge,
    NewEnvelope,
    PurgeRange,
    Rejection,
    Storage,
    StreamSnapshot,
    StreamUpdate,
)

log = logging.getLogger("hq.ingest")


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a batch, with the identity read from it.

    `envelope` is None when it did not decode; `failure` is set when it was refused before
    the stream state was consulted (decode, version, signature).
    """

    index: int
    terminal: str
    stream: bytes
    seq: int
    envelope: Envelope | None
    failure: Rejection | None = None


# --- checks without stream state ------------------------------------------------------------


def _peek(data: bytes) -> tuple[str, bytes, int, object] | None:
    """Best-effort (terminal, stream, seq, v) of bytes that do not decode strictly, so the
    rejection can name a seq the terminal knows. Nothing read here is trusted beyond that."""
    try:
        raw = cbor2.loads(data)
    except Exception:  # any failure to parse a stranger's bytes means "no identity"
        return None
    if not isinstance(raw, dict):
        return None
    terminal, stream, seq = raw.get("terminal"), raw.get("stream"), raw.get("seq")
    if not (isinstance(terminal, str) and TERMINAL_RE.fullmatch(terminal)):
        return None
    if not (isinstance(stream, bytes) and len(stream) == 16):
        return None
    if type(seq) is not int or seq < 1:
        return None
    return terminal, stream, seq, raw.get("v")


def read_element(index: int, data: bytes) -> Element:
    """Decode one element strictly; an undecodable one becomes a decode/version failure."""
    try:
        env = decode(data)
    except DecodeError as exc:
        identity = _peek(data)
        if identity is None:
            raise Malformed(f"element {index} is not an envelope ({exc.reason})") from None
        terminal, stream, seq, v = identity
        if type(v) is int and v != VERSION:
            failure = Rejection(seq, "version", f"envelope version {v}; this HQ speaks v1")
        else:
            failure = Rejection(seq, "decode", exc.reason)
        return Element(index, terminal, stream, seq, None, failure)
    h = env.header
    return Element(index, h.terminal, h.stream, h.seq, env)


def check_batch(elements: Sequence[Element]) -> tuple[str, bytes]:
    """One terminal, one stream, strictly ascending seqs: else the body is malformed."""
    first = elements[0]
    for e in elements:
        if e.terminal != first.terminal:
            raise Malformed(
                f"mixed terminals: element {e.index} is {e.terminal}, element 0 {first.terminal}"
            )
        if e.stream != first.stream:
            raise Malformed(f"mixed streams: element {e.index} is of another stream")
        if e.seq > MAX_SEQ:
            raise Malformed(f"element {e.index}: seq {e.seq} is beyond 2^63-1")
    for a, b in pairwise(elements):
        if b.seq <= a.seq:
            raise Malformed(
                f"seqs not ascending: element {b.index} has seq {b.seq} after seq {a.seq}"
            )
    return first.terminal, first.stream


def check_keys(
    terminal: str, elements: Sequence[Element], keys: dict[str, bytes] | None
) -> list[Element]:
    """403 for an unknown terminal or key; otherwise verify every signature."""
    if keys is None:
        raise Forbidden(
            f"terminal {terminal} is not enrolled (cumulus-hq enroll --terminal {terminal} "
            "--pubkey ...)",
            code="unknown-terminal",
        )
    public: dict[str, Ed25519PublicKey] = {}
    for e in elements:
        if e.envelope is None:
            continue
        kid = e.envelope.header.sig_kid
        if kid not in keys:
            raise Forbidden(
                f"key {kid} is not registered for terminal {terminal}: enrol it "
                "(cumulus-hq enroll), then retry; nothing of this batch was stored",
                code="unknown-key",
            )
        if kid not in public:
            public[kid] = Ed25519PublicKey.from_public_bytes(keys[kid])
    out: list[Element] = []
    for e in elements:
        if e.envelope is not None and e.failure is None:
            try:
                verify(e.envelope, public[e.envelope.header.sig_kid])
            except SignatureError as exc:
                e = replace(e, failure=Rejection(e.seq, "signature", exc.reason))
        out.append(e)
    return out


# --- the decision over stream state ---------------------------------------------------------


@dataclass
class _Chain:
    """A working copy of one stream's snapshot while a batch is decided, and what changes."""

    acked: int
    hashes: dict[int, bytes]  # every stored envelope we know of: seq -> hash
    purges: list[PurgeRange]
    ahead: dict[int, AheadPurge]
    new: dict[int, NewEnvelope] = field(default_factory=dict)
    new_purges: list[PurgeRange] = field(default_factory=list)
    chained: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, snap: StreamSnapshot) -> _Chain:
        hashes = dict(snap.hashes)
        hashes.update({seq: a.hash for seq, a in snap.ahead.items()})
        return cls(snap.acked_through, hashes, list(snap.purges), dict(snap.ahead))

    def known_hash(self, seq: int) -> bytes | None:
        """The hash of envelope `seq` as far as HQ knows: stored, else the `last_hash` of a
        purged range ending there; seq 0 is the zero hash every chain starts from."""
        if seq == 0:
            return ZERO_HASH
        if seq in self.hashes:
            return self.hashes[seq]
        for p in reversed(self.purges):
            if p.last_seq == seq:
                return p.last_hash
        return None

    def purged_by(self, seq: int) -> PurgeRange | None:
        """The purge range reaching furthest among those containing `seq`."""
        covering = [p for p in self.purges if p.first_seq <= seq <= p.last_seq]
        return max(covering, key=lambda p: p.last_seq) if covering else None

    def store(self, env: Envelope, digest: bytes, *, chained: bool) -> None:
        h = env.header
        self.new[h.seq] = NewEnvelope(
            h.seq, h.kind, h.ts, h.prev, digest, env.encoded, chained=chained, enc_kid=h.enc_kid
        )
        self.hashes[h.seq] = digest
        if not chained:
            self.ahead[h.seq] = AheadPurge(h.seq, h.prev, digest)
        if h.purged is not None:
            p = PurgeRange(h.seq, h.purged.first_seq, h.purged.last_seq, h.purged.last_hash)
            self.purges.append(p)
            self.new_purges.append(p)

    def advance(self) -> None:
        """Move `acked` over everything stored or explained; check ahead purges on the way."""
        s = self.acked + 1
        while True:
            covering = self.purged_by(s)
            if covering is not None:
                s = covering.last_seq + 1
                continue
            ahead = self.ahead.get(s)
            if ahead is not None:
                if ahead.prev != self.known_hash(s - 1):
                    self._drop(ahead)
                    break
                del self.ahead[s]
                if s in self.new:
                    self.new[s] = replace(self.new[s], chained=True)
                else:
                    self.chained.append(s)
            elif s not in self.hashes:
                break
            s += 1
        self.acked = s - 1

    def _drop(self, ahead: AheadPurge) -> None:
        """An ahead purge whose turn came and whose prev does not link: remove it, alert."""
        del self.ahead[ahead.seq]
        del self.hashes[ahead.seq]
        fresh = self.new.pop(ahead.seq, None)
        if fresh is None:
            self.dropped.append(ahead.seq)
        self.rejections.append(
            Rejection(
                ahead.seq,
                "chain",
                f"purge envelope's prev does not match the hash of seq {ahead.seq - 1}; "
                "removed (its range stays explained)",
                evidence=None if fresh is None else fresh.body,
                alert=True,
            )
        )

    def update(self) -> StreamUpdate:
        return StreamUpdate(
            acked_through=self.acked,
            new_envelopes=tuple(self.new[s] for s in sorted(self.new)),
            new_purges=tuple(self.new_purges),
            chained=tuple(self.chained),
            dropped=tuple(self.dropped),
            rejections=tuple(sorted(self.rejections, key=lambda r: r.seq)),
            duplicates=tuple(self.duplicates),
        )


def _decide_one(st: _Chain, env: Envelope) -> None:
    h = env.header
    seq = h.seq
    digest = envelope_hash(env.encoded)
    stored = st.hashes.get(seq)
    if stored is not None:
        if stored == digest:
            st.duplicates.append(seq)
            return
        st.rejections.append(
            Rejection(
                seq,
                "fork",
                f"seq {seq} is already stored with different bytes (stored "
                f"{stored.hex()[:16]}…, received {digest.hex()[:16]}…): two envelopes signed "
                "for one seq, e.g. a cloned terminal image",
                evidence=env.encoded,
                alert=True,
            )
        )
        return
    if h.purged is not None and seq > st.acked + 1:
        known = st.known_hash(h.purged.last_seq)
        if known is not None and known != h.purged.last_hash:
            st.rejections.append(
                Rejection(
                    seq,
                    "fork",
                    f"purge says seq {h.purged.last_seq} hashed {h.purged.last_hash.hex()[:16]}…"
                    f" but HQ holds {known.hex()[:16]}… there",
                    evidence=env.encoded,
                    alert=True,
                )
            )
            return
        st.store(env, digest, chained=False)  # ahead of its turn: its range is explained
        st.advance()
        return
    if seq <= st.acked:
        covering = st.purged_by(seq)
        by = f"purge seq {covering.purge_seq}" if covering else "a purge"
        st.rejections.append(
            Rejection(seq, "purged", f"seq {seq} was explained by {by}; it is not stored")
        )
        return
    if seq > st.acked + 1:
        st.rejections.append(
            Rejection(seq, "gap", f"expected seq {st.acked + 1} next; resend from there")
        )
        return
    if h.prev != st.known_hash(seq - 1):
        st.rejections.append(
            Rejection(
                seq,
                "chain",
                f"prev does not match the hash of seq {seq - 1} held by HQ",
                evidence=env.encoded,
                alert=True,
            )
        )
        return
    st.store(env, digest, chained=True)
    st.advance()


def _ahead_purge(st: _Chain, e: Element) -> bool:
    env = e.envelope
    return (
        e.failure is None
        and env is not None
        and env.header.purged is not None
        and env.header.seq > st.acked + 1
    )


def decide(snapshot: StreamSnapshot, elements: Sequence[Element]) -> StreamUpdate:
    """The verdict on a checked batch, given the stream's state: pure, no I/O.

    Purge envelopes that are ahead of their turn are taken first, wherever they sit in the
    batch: the spec accepts them on their signature alone, and a terminal that sent its
    purge together with what follows it then gets everything acknowledged in one round
    instead of a row of `gap` rejections.
    """
    st = _Chain.of(snapshot)
    st.advance()  # idempotent: on state written by `decide` it changes nothing
    early = {e.index for e in elements if _ahead_purge(st, e)}
    for e in elements:
        if e.index in early and e.envelope is not None:
            _decide_one(st, e.envelope)
    for e in elements:
        if e.index in early:
            continue
        if e.failure is not None:
            st.rejections.append(e.failure)
        elif e.envelope is not None:
            _decide_one(st, e.envelope)
    return st.update()


# --- the whole request ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestResult:
    terminal: str
    stream: bytes
    received: int
    update: StreamUpdate

    def answer(self) -> dict[str, Any]:
        """The 200 body of envelope-v1: `{stream, acked_through, rejected: [{seq, reason}]}`."""
        return {
            "stream": self.stream,
            "acked_through": self.update.acked_through,
            "rejected": [{"seq": r.seq, "reason": r.reason} for r in self.update.rejections],
        }


def wanted_seqs(elements: Sequence[Element]) -> Collection[int]:
    """The seqs whose stored hash a batch may need: its own, and its purges' last seqs."""
    wanted = {e.seq for e in elements}
    for e in elements:
        if e.envelope is not None and e.envelope.header.purged is not None:
            wanted.add(e.envelope.header.purged.last_seq)
    return wanted


def ingest(storage: Storage, raw_elements: Sequence[bytes]) -> IngestResult:
    """Verify and store one batch (blocking: run it on the storage thread)."""
    elements = [read_element(i, data) for i, data in enumerate(raw_elements)]
    terminal, stream = check_batch(elements)
    elements = check_keys(terminal, elements, storage.terminal_keys(terminal))
    update = storage.ingest(
        terminal, stream, wanted_seqs(elements), partial(decide, elements=elements)
    )
    result = IngestResult(terminal, stream, len(elements), update)
    _log(result)
    return result


def _log(result: IngestResult) -> None:
    """Log once, after commit: alerts at ERROR (a person must look), other rejections at
    WARNING. Headers only: nothing personal is readable at this tier anyway."""
    where = f"terminal={result.terminal} stream={result.stream.hex()}"
    for r in result.update.rejections:
        if r.alert:
            log.error("%s %s seq=%d: %s", r.code.upper(), where, r.seq, r.detail)
        else:
            log.warning("rejected %s seq=%d: %s", where, r.seq, r.reason)
    log.info(
        "batch %s: %d received, %d stored, %d duplicate, %d rejected, acked_through=%d",
        where,
        result.received,
        len(result.update.new_envelopes),
        len(result.update.duplicates),
        len(result.update.rejections),
        result.update.acked_through,
    )
