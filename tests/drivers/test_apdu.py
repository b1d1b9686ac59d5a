"""The Cumulus applet exchange (sans-I/O): tables run both ways, misuse, and fuzzing.

A row is a transcript (each command we send and the card's answer) and how the exchange ends.
Decoding: driving `CumulusExchange` with the answers sends exactly those commands and ends
with that outcome. Encoding (rows with a ``card``): the card stub's applet, given the same
commands, answers exactly those bytes, so the driver and the stub agree on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.cards import CARD_REJECTS, check_card
from drivers.protocols.apdu import (
    APDU_REJECTS,
    READ_NUMBER,
    SELECT,
    CardNumber,
    CommandApdu,
    CumulusExchange,
    LocalProtocolError,
    Outcome,
    Rejected,
    RemoteProtocolError,
    ResponseApdu,
    run_exchange,
)
from firmware_stubs.vpcd_card import CumulusApplet
from tests.drivers.helpers import CARD, PRODUCT

SELECT_HEX = "00A4040008F043554D554C555300"  # spec/interfaces.md, normative
READ_HEX = "80CA000100"
READ_13_HEX = "80CA00010D"
OK = "9000"
NUMBER = CARD.encode().hex()


@dataclass(frozen=True)
class Row:
    name: str
    transcript: list[tuple[str, str]]  # (command hex, answer hex)
    outcome: Outcome
    card: Callable[[], CumulusApplet] | None = None  # a stub applet answering exactly so


ROWS = [
    Row(
        "a Cumulus card",
        [(SELECT_HEX, OK), (READ_HEX, NUMBER + OK)],
        CardNumber(CARD),
        lambda: CumulusApplet(CARD),
    ),
    Row(
        "a card without the applet is not-cumulus",
        [(SELECT_HEX, "6A82")],
        Rejected("not-cumulus", 0x6A82),
        lambda: CumulusApplet(CARD, applet=False),
    ),
    Row("69 85 on select", [(SELECT_HEX, "6985")], Rejected("status-6985", 0x6985)),
    Row(
        "69 85 on read",
        [(SELECT_HEX, OK), (READ_HEX, "6985")],
        Rejected("status-6985", 0x6985),
    ),
    Row(
        "6C xx: read again with the Le the card asked for",
        [(SELECT_HEX, OK), (READ_HEX, "6C0D"), (READ_13_HEX, NUMBER + OK)],
        CardNumber(CARD),
        lambda: CumulusApplet(CARD, exact_le=True),
    ),
    Row(
        "a second 6C for the same command is bad-status",
        [(SELECT_HEX, OK), (READ_HEX, "6C0D"), (READ_13_HEX, "6C0D")],
        Rejected("bad-status", 0x6C0D),
    ),
    Row(
        "6C on select is retried too; the retry budget is per command",
        [
            (SELECT_HEX, "6C00"),
            (SELECT_HEX, OK),
            (READ_HEX, "6C0D"),
            (READ_13_HEX, NUMBER + OK),
        ],
        CardNumber(CARD),
    ),
    Row("any other status on select", [(SELECT_HEX, "6D00")], Rejected("bad-status", 0x6D00)),
    Row("61 xx is just another status", [(SELECT_HEX, "6110")], Rejected("bad-status", 0x6110)),
    Row(
        "6A 82 after a good select is a broken card, not another card",
        [(SELECT_HEX, OK), (READ_HEX, "6A82")],
        Rejected("bad-status", 0x6A82),
    ),
    Row(
        "select may answer data (an FCI) with 90 00",
        [(SELECT_HEX, "6F00" + OK), (READ_HEX, NUMBER + OK)],
        CardNumber(CARD),
    ),
    Row(
        "bad check digit",
        [(SELECT_HEX, OK), (READ_HEX, b"2099123456787".hex() + OK)],
        Rejected("bad-check-digit", 0x9000),
        lambda: CumulusApplet("2099123456787"),
    ),
    Row(
        "someone else's valid EAN-13 is bad-prefix",
        [(SELECT_HEX, OK), (READ_HEX, PRODUCT.encode().hex() + OK)],
        Rejected("bad-prefix", 0x9000),
        lambda: CumulusApplet(PRODUCT),
    ),
    Row(
        "too short",
        [(SELECT_HEX, OK), (READ_HEX, b"2099".hex() + OK)],
        Rejected("bad-length", 0x9000),
        lambda: CumulusApplet("2099"),
    ),
    Row(
        "not digits",
        [(SELECT_HEX, OK), (READ_HEX, b"2099-23456786".hex() + OK)],
        Rejected("not-digits", 0x9000),
        lambda: CumulusApplet("2099-23456786"),
    ),
    Row(
        "no data at all",
        [(SELECT_HEX, OK), (READ_HEX, OK)],
        Rejected("not-digits", 0x9000),
        lambda: CumulusApplet(""),
    ),
    Row(
        "non-ASCII digits are not digits",
        [(SELECT_HEX, OK), (READ_HEX, "D9A2" * 6 + "36" + OK)],
        Rejected("not-digits", 0x9000),
    ),
    Row("one byte is no response APDU", [(SELECT_HEX, "90")], Rejected("bad-response")),
    Row("nothing is no response APDU", [(SELECT_HEX, "")], Rejected("bad-response")),
    Row(
        "more than 256 data bytes is no short APDU",
        [(SELECT_HEX, OK), (READ_HEX, "31" * 257 + OK)],
        Rejected("bad-response"),
    ),
]


def ids(rows: list[Row]) -> list[str]:
    return [row.name for row in rows]


def drive(answers: list[bytes]) -> tuple[list[bytes], Outcome | None]:
    """Run an exchange on these answers; the commands it sent and how it ended."""
    exchange = CumulusExchange()
    sent: list[bytes] = []
    for answer in answers:
        command = exchange.next_command()
        if command is None:
            break
        sent.append(command)
        exchange.receive(answer)
    return sent, exchange.outcome


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_answers_give_these_commands_and_this_outcome(row: Row) -> None:
    sent, outcome = drive([bytes.fromhex(answer) for _, answer in row.transcript])
    assert [c.hex().upper() for c in sent] == [c for c, _ in row.transcript]
    assert outcome == row.outcome


BOTH_WAYS = [row for row in ROWS if row.card is not None]


@pytest.mark.parametrize("row", BOTH_WAYS, ids=ids(BOTH_WAYS))
def test_the_stub_card_answers_exactly_these_bytes(row: Row) -> None:
    assert row.card is not None
    card = row.card()
    for command, answer in row.transcript:
        assert card.respond(bytes.fromhex(command)).hex().upper() == answer.upper()


@pytest.mark.parametrize("row", BOTH_WAYS, ids=ids(BOTH_WAYS))
def test_exchange_against_the_stub_card(row: Row) -> None:
    assert row.card is not None
    assert run_exchange(row.card().respond) == row.outcome


def test_commands_are_the_normative_bytes() -> None:
    assert SELECT.to_bytes().hex().upper() == SELECT_HEX
    assert READ_NUMBER.to_bytes().hex().upper() == READ_HEX


COMMANDS = [
    ("case 1", "80CA0001", CommandApdu(0x80, 0xCA, 0, 1)),
    ("case 2", READ_HEX, CommandApdu(0x80, 0xCA, 0, 1, ne=256)),
    ("case 2 short Le", READ_13_HEX, CommandApdu(0x80, 0xCA, 0, 1, ne=13)),
    ("case 3", "00A4040002AABB", CommandApdu(0, 0xA4, 4, 0, b"\xaa\xbb")),
    ("case 4", SELECT_HEX, SELECT),
]


@pytest.mark.parametrize(("name", "wire", "command"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_apdus_both_ways(name: str, wire: str, command: CommandApdu) -> None:
    assert command.to_bytes().hex().upper() == wire
    assert CommandApdu.parse(bytes.fromhex(wire)) == command


@pytest.mark.parametrize(
    "wire", ["", "00A404", "00A40400000001AA", "00A4040003AABB", "00A4040001AABBCC"]
)
def test_malformed_command_apdus_are_remote_errors(wire: str) -> None:
    with pytest.raises(RemoteProtocolError):
        CommandApdu.parse(bytes.fromhex(wire))


def test_response_apdu_splits_data_and_status_and_masks_its_repr() -> None:
    response = ResponseApdu.parse(CARD.encode() + b"\x90\x00")
    assert (response.data, response.sw) == (CARD.encode(), 0x9000)
    assert response.to_bytes() == CARD.encode() + b"\x90\x00"
    assert CARD not in repr(response)
    assert CARD not in repr(CardNumber(CARD)) and "2099*******86" in repr(CardNumber(CARD))


def test_card_number_and_rejected_refuse_invalid_values() -> None:
    with pytest.raises(ValueError, match="card number"):
        CardNumber("2099123456787")
    with pytest.raises(ValueError, match="reason"):
        Rejected("whatever")


def test_driving_out_of_turn_is_a_local_error() -> None:
    exchange = CumulusExchange()
    with pytest.raises(LocalProtocolError):
        exchange.receive(b"\x90\x00")
    assert exchange.next_command() == SELECT.to_bytes()
    with pytest.raises(LocalProtocolError):
        exchange.next_command()
    exchange.receive(b"\x6a\x82")
    assert exchange.next_command() is None
    with pytest.raises(LocalProtocolError):
        exchange.receive(b"\x90\x00")


def test_prefixes_are_configuration() -> None:
    applet = CumulusApplet(PRODUCT)
    assert run_exchange(applet.respond, prefixes=["4006"]) == CardNumber(PRODUCT)
    assert run_exchange(applet.respond, prefixes=["2099"]) == Rejected("bad-prefix", 0x9000)


# -- fuzzing ------------------------------------------------------------------------------

STATUS = st.sampled_from([b"\x90\x00", b"\x6c\x0d", b"\x6c\x00", b"\x6a\x82", b"\x69\x85"])
PLAUSIBLE = st.builds(
    bytes.__add__,
    st.one_of(
        st.binary(max_size=20),
        st.text("0123456789", min_size=12, max_size=14).map(str.encode),
        st.just(CARD.encode()),
    ),
    st.one_of(STATUS, st.binary(min_size=2, max_size=2)),
)
ANSWER = st.one_of(st.binary(max_size=300), PLAUSIBLE)


@given(st.lists(ANSWER, max_size=6))
def test_any_answers_end_in_a_valid_card_or_a_known_reject(answers: list[bytes]) -> None:
    exchange = CumulusExchange()
    for answer in answers:
        if exchange.next_command() is None:
            break
        exchange.receive(answer)  # never raises, whatever the bytes
    assert exchange.commands_sent <= 4
    outcome = exchange.outcome
    if isinstance(outcome, CardNumber):
        assert check_card(outcome.number) is None
    elif isinstance(outcome, Rejected):
        assert outcome.reason in APDU_REJECTS | CARD_REJECTS
    else:
        assert outcome is None and len(answers) == exchange.commands_sent


@given(st.binary(max_size=300))
def test_response_parse_raises_only_remote_errors(raw: bytes) -> None:
    try:
        response = ResponseApdu.parse(raw)
    except RemoteProtocolError:
        assert len(raw) < 2 or len(raw) > 258
    else:
        assert response.to_bytes() == raw


@given(st.binary(max_size=300))
def test_command_parse_raises_only_remote_errors_and_round_trips(raw: bytes) -> None:
    try:
        command = CommandApdu.parse(raw)
    except RemoteProtocolError:
        return
    assert command.to_bytes() == raw


@given(st.binary(max_size=300))
def test_the_stub_card_answers_anything_with_a_status_word(raw: bytes) -> None:
    assert len(CumulusApplet(CARD).respond(raw)) >= 2


@given(st.text(min_size=0, max_size=40).filter(lambda t: all(ord(c) < 256 for c in t)))
def test_a_stub_card_with_any_number_is_judged_by_the_card_rules(number: str) -> None:
    outcome = run_exchange(CumulusApplet(number).respond)
    reason = check_card(number)
    assert outcome == (CardNumber(number) if reason is None else Rejected(reason, 0x9000))
