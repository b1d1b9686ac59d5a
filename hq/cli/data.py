"""The reader tier's commands: `reader run`, `retention run`, `export`, `stats`, `audit`.

Each is a thin wrapper over one library function (`hq.reader`, `hq.retention`, `hq.export`,
`hq.stats`); each that touches personal data writes one audit-log entry, with the card
masked. Nothing here prints a card number except the customer's own export on stdout (or
into the 0600 file given with `-o`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from agent.fsutil import write_private
from hq import retention, stats
from hq.cli.common import (
    CliError,
    ExitStatus,
    actor,
    json_option,
    open_store,
    print_json,
    say,
    state_dir,
)
from hq.export import ExportError, MissingKey, export_card, load_reader_keys, mask_card
from hq.keys import HqKey
from hq.periods import PeriodError, epoch_ms, parse_period, rfc3339
from hq.reader import read_envelopes
from hq.report_html import render_html
from hq.storage import HqStore, StorageError

PRODUCT_GROUPS_FILE = "product-groups.toml"


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    db: argparse.ArgumentParser,
) -> None:
    kid = argparse.ArgumentParser(add_help=False)
    kid.add_argument(
        "--kid", action="append", metavar="ID",
        help="decrypt with this key only (repeatable; default every key under <state-dir>/keys)",
    )  # fmt: skip
    out = json_option()

    rd = sub.add_parser("reader", help="reader tier: decrypt envelopes into the CRM tables")
    rds = rd.add_subparsers(dest="reader_command", metavar="ACTION", required=True)
    rr = rds.add_parser(
        "run", help="read every new purchase envelope", parents=[common, db, kid, out]
    )
    rr.set_defaults(handler=reader_run)

    rt = sub.add_parser("retention", help="delete and unlink what the promises say must go")
    rts = rt.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    rn = rts.add_parser(
        "run", help="apply the retention periods (audit-logged)", parents=[common, db, out]
    )
    rn.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    rn.add_argument(
        "--purchase-link",
        default="5y",
        metavar="PERIOD",
        help="purchases stay linked to the card this long (default 5y)",
    )
    rn.add_argument(
        "--accounting",
        default="10y",
        metavar="PERIOD",
        help="unlinked transaction facts are kept this long (default 10y)",
    )
    rn.add_argument(
        "--envelopes",
        default="5y",
        metavar="PERIOD",
        help="stored envelopes are kept this long (default 5y; at most the link)",
    )
    rn.set_defaults(handler=retention_run)  # fmt: skip

    ex = sub.add_parser(
        "export", help="a customer's own purchases of the last 2 years (right of access)",
        parents=[common, db, kid],
    )  # fmt: skip
    ex.add_argument("--card", required=True, metavar="NUMBER", help="13-digit card number")
    ex.add_argument("--since", default="2y", metavar="PERIOD",
                    help="how far back: 2y (the most), 18m, 30d (default 2y)")  # fmt: skip
    ex.add_argument("--format", choices=("json", "html"), default="json")
    ex.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (mode 0600)")
    ex.set_defaults(handler=export)

    st = sub.add_parser(
        "stats", help="aggregates without any group below k households", parents=[common, db, out]
    )
    st.add_argument(
        "--by",
        default="store,week,group",
        metavar="DIMS",
        help="comma-separated: store, week, group (default all three)",
    )
    st.add_argument(
        "--k",
        type=int,
        default=stats.DEFAULT_K,
        metavar="N",
        help=f"smallest group shown, in households (default {stats.DEFAULT_K}, "
        f"at least {stats.MIN_K})",
    )
    st.add_argument("--since", default="1y", metavar="PERIOD", help="how far back (default 1y)")
    st.add_argument(
        "--groups",
        type=Path,
        metavar="FILE",
        help=f"GTIN prefix → product group (TOML; default <state-dir>/"
        f"{PRODUCT_GROUPS_FILE} if present, else GS1 prefixes)",
    )
    st.set_defaults(handler=stats_cmd)  # fmt: skip

    au = sub.add_parser("audit", help="the audit log (retention, exports, stats, keys)",
                        parents=[common, db, out])  # fmt: skip
    au.add_argument("--action", metavar="NAME", help="only this action, e.g. retention.run")
    au.set_defaults(handler=audit)


def _reader_keys(args: argparse.Namespace) -> dict[str, HqKey]:
    try:
        return load_reader_keys(state_dir(args), args.kid)
    except MissingKey as exc:
        raise CliError(str(exc), ExitStatus.NOINPUT) from None


def reader_run(args: argparse.Namespace) -> ExitStatus:
    store = open_store(args, must_exist=True)
    try:
        report = read_envelopes(store, _reader_keys(args))
        store.audit("reader.run", actor(), json.dumps(report.document(), sort_keys=True))
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    finally:
        store.close()
    if args.json:
        print_json(report.document())
    say(report.summary())
    return ExitStatus.OK


def _policy(args: argparse.Namespace) -> retention.RetentionPolicy:
    try:
        return retention.RetentionPolicy(
            purchase_link=parse_period(args.purchase_link, what="--purchase-link"),
            accounting=parse_period(args.accounting, what="--accounting"),
            envelopes=parse_period(args.envelopes, what="--envelopes"),
        )
    except (PeriodError, retention.PolicyError) as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None


def retention_run(args: argparse.Namespace) -> ExitStatus:
    policy = _policy(args)
    store = open_store(args, must_exist=True)
    try:
        result = retention.run(store, policy, dry_run=args.dry_run, actor=actor())
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    finally:
        store.close()
    doc = result.document()
    if args.json:
        print_json(doc)
    else:
        print(f"retention {'dry run (nothing changed)' if args.dry_run else 'run'} as of "
              f"{doc['now']}; policy {policy.as_dict()}")  # fmt: skip
        for name, value in result.counts.as_dict().items():
            print(f"  {name.replace('_', ' '):<24} {value:>9}")
    if result.counts.envelopes_never_read:
        say(
            f"{result.counts.envelopes_never_read} purchase envelopes expired before the "
            "reader tier opened them (their accounting facts are not in the CRM)"
        )
    return ExitStatus.OK


def _write(args: argparse.Namespace, text: str) -> None:
    if args.output is None:
        sys.stdout.write(text)
        return
    try:
        write_private(args.output, text.encode())
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc}", ExitStatus.CANTCREAT) from None


def export(args: argparse.Namespace) -> ExitStatus:
    try:
        period = parse_period(args.since)
    except PeriodError as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    store = open_store(args, must_exist=True)
    try:
        report = export_card(store, state_dir(args), args.card, period, kids=args.kid)
        store.audit(
            "export",
            actor(),
            json.dumps({"card": mask_card(report.card), "since": rfc3339(report.since),
                        "until": rfc3339(report.until), "count": len(report.purchases),
                        "format": args.format}, sort_keys=True),
        )  # fmt: skip
    except MissingKey as exc:
        raise CliError(str(exc), ExitStatus.NOINPUT) from None
    except ExportError as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    finally:
        store.close()
    if args.format == "html":
        _write(args, render_html(report))
    else:
        _write(args, json.dumps(report.document(), indent=2, ensure_ascii=False) + "\n")
    say(report.summary())
    return ExitStatus.OK


def _groups(args: argparse.Namespace) -> stats.ProductGroups:
    path = args.groups or state_dir(args) / PRODUCT_GROUPS_FILE
    if args.groups is None and not path.exists():
        return stats.ProductGroups()
    try:
        return stats.ProductGroups.load(path)
    except stats.StatsError as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None


def stats_cmd(args: argparse.Namespace) -> ExitStatus:
    if args.k < stats.MIN_K:
        raise CliError(
            f"--k {args.k}: groups below {stats.MIN_K} households single people out",
            ExitStatus.USAGE,
        )
    try:
        by = stats.check_dimensions([d.strip() for d in args.by.split(",") if d.strip()])
        since_period = parse_period(args.since)
    except (stats.StatsError, PeriodError) as exc:
        raise CliError(str(exc), ExitStatus.USAGE) from None
    groups = _groups(args)
    until = datetime.now(UTC)
    since = since_period.start(until)
    store = open_store(args, must_exist=True)
    try:
        result = stats.aggregate(
            store.item_rows(epoch_ms(since), epoch_ms(until)), by, args.k, groups
        )
        store.audit(
            "stats",
            actor(),
            json.dumps({"by": list(by), "k": args.k, "since": rfc3339(since),
                        "until": rfc3339(until), "groups": len(result.groups),
                        "suppressed": result.suppressed}, sort_keys=True),
        )  # fmt: skip
    except stats.StatsError as exc:
        raise CliError(str(exc), ExitStatus.DATAERR) from None
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    finally:
        store.close()
    rows = [g.document(by) for g in result.groups]
    if args.json:
        print_json({"by": list(by), "k": args.k, "since": rfc3339(since), "until": rfc3339(until),
                    "groups": rows, "suppressed": result.suppressed})  # fmt: skip
    else:
        header = [*by, "households", "purchases", "quantity", "amount"]
        print("\t".join(header))
        for r in rows:
            print("\t".join(str(r[h]) for h in header))
    say(f"{len(rows)} groups shown, {result.suppressed} below k={args.k} households suppressed")
    return ExitStatus.OK


def audit(args: argparse.Namespace) -> ExitStatus:
    store: HqStore = open_store(args, must_exist=True)
    try:
        entries = store.audit_log(args.action)
    except StorageError as exc:
        raise CliError(str(exc), ExitStatus.UNAVAILABLE) from None
    finally:
        store.close()
    docs = [
        {"id": e.id, "at": rfc3339(datetime.fromtimestamp(e.at, UTC)), "action": e.action,
         "actor": e.actor, "detail": json.loads(e.detail)}
        for e in entries
    ]  # fmt: skip
    if args.json:
        print_json(docs)
    else:
        for d in docs:
            print(f"{d['id']:>6} {d['at']} {d['action']:<18} {d['actor']:<12} "
                  f"{json.dumps(d['detail'], sort_keys=True)}")  # fmt: skip
    return ExitStatus.OK
