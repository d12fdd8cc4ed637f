"""Options shared by the commands, the session they open, and the output contract.

The contract (README "Output"): with `-o json` stdout carries exactly one JSON document, whatever
happened, with a top-level `ok` and `errors` (`[{"host", "phase", "message"}]`); every progress,
warning and error line goes to stderr. Commands return an `Outcome`; `output_option` prints it.
Errors raised out of a command are turned into that document by the group (overlayctl.cli).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from overlayctl.errors import ExitCode, OverlayctlError
from overlayctl.inventory import check_local_files, load_inventory
from overlayctl.inventory.load import state_dir
from overlayctl.inventory.model import Inventory
from overlayctl.remote.group import HostFailure
from overlayctl.remote.session import Reporter, RunOptions, Session
from overlayctl.text import printable

F = Callable[..., Any]


def error_entry(message: str, host: str | None = None, phase: str | None = None) -> dict:
    return {"host": host, "phase": phase, "message": message}


def failure_entries(failures: Iterable[HostFailure]) -> list[dict]:
    return [error_entry(f.error, f.host, f.phase) for f in failures]


@dataclass
class Outcome:
    """What a command hands back: text for people, a document for `-o json`, and its verdict.

    ERRORS are `{"host", "phase", "message"}` entries; OK False exits with CODE (default 1).
    """

    text: str
    doc: dict[str, Any]
    ok: bool = True
    errors: list[dict] = field(default_factory=list)
    code: ExitCode = ExitCode.FAILED

    def document(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, **self.doc}


_json_run = {"on": False}  # process-wide: progress comes from worker and heartbeat threads too,
# where Click has no current context


def set_json_mode(on: bool) -> None:
    _json_run["on"] = on


def json_mode() -> bool:
    return _json_run["on"]


def progress(line: str) -> None:
    """A progress line, from any thread: stdout for people, stderr when stdout is reserved for
    the JSON document."""
    click.echo(printable(line), err=json_mode())  # a host's words, never a control sequence


def print_document(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


class _Format(click.Choice):
    """An output format; a value that is not one says where files are named instead."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        self.fail(
            f"{value!r} is not an output format ({', '.join(map(str, self.choices))}): -o is the "
            "output format on every command; a file is named with --out",
            param,
            ctx,
        )


def output_option(*formats: str) -> Callable[[F], F]:
    """`-o/--output FORMAT` (the first of FORMATS by default, "json" always offered).

    The command returns an Outcome; this prints it in the chosen format and exits 1 (or the
    Outcome's code) when it is not ok.
    """
    choices = [*(formats or ("table",)), "json"]

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, output: str, **kwargs: Any) -> None:
            outcome: Outcome = fn(*args, **kwargs)
            if output == "json":
                print_document(outcome.document())
            elif outcome.text:
                click.echo(outcome.text)
            if not outcome.ok:
                sys.exit(int(outcome.code))

        def remember(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
            set_json_mode(value == "json")
            return value

        return click.option(
            "-o", "--output", type=_Format(choices), default=choices[0], show_default=True,
            is_eager=True, callback=remember, help="Output format; json: one document on stdout.",
        )(wrapper)  # fmt: skip

    return decorate


def inventory_option(fn: F) -> F:
    return click.option(
        "-i", "--inventory",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="OVERLAYCTL_INVENTORY", default="cluster.yaml",
        show_default=True, show_envvar=True, help="The inventory file.",
    )(fn)  # fmt: skip


def connection_options(fn: F) -> F:
    for decorator in reversed((
        click.option("--accept-new-host-keys", is_flag=True,
                     help="Record keys of hosts not yet in known_hosts (never changed keys)."),
        # 10, measured (benchmarks/bootstrap.py): 25 lab hosts sharing 2 cores ran init no
        # faster 25 at once (34.4 s fresh, 5.1 s re-run) than 10 at once (33.0 s, 4.2 s);
        # their own work bounds it there. verify's pings and doctor's probes run all at once.
        click.option("--parallel", type=click.IntRange(1, 256), default=10, show_default=True,
                     help="Hosts worked on at once (hosts with CPUs of their own may take "
                          "more; 10 measured best for 25 hosts sharing one machine)."),
    )):  # fmt: skip
        fn = decorator(fn)
    return fn


def etcd_timeout_option(fn: F) -> F:
    return click.option(
        "--etcd-timeout", type=float, default=90.0, show_default=True, metavar="SECONDS",
        help="Seconds to wait for every etcd member to be healthy.",
    )(fn)  # fmt: skip


def load(inventory: Path, local_files: bool = True) -> Inventory:
    """Validate the inventory (and the SSH files it names) before any host is touched."""
    inv, warnings = load_inventory(inventory)
    if local_files:
        warnings += check_local_files(inv)
    for warning in warnings:
        click.echo(f"overlayctl: warning: {warning}", err=True)
    return inv


def command_as_typed() -> str:
    """`overlayctl certs rotate`: what the operator typed, for locks and logs."""
    ctx = click.get_current_context()
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["overlayctl", *reversed(names)])


def open_session(
    inv: Inventory, command: str, options: RunOptions, lock: bool, log: bool = True
) -> Session:
    """A session over INV's hosts. LOG False (`plan`): nothing is written here, not even a log."""
    typed = command_as_typed()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = state_dir(inv) / "logs" / f"{command}-{stamp}.log" if log else None
    reporter = Reporter(log_path, echo=progress)
    reporter.log(f"{typed} on {len(inv.hosts)} hosts")
    return Session(inv, reporter, options, command=typed, lock=lock)


def ended(
    session: Session,
    text: str,
    doc: dict[str, Any],
    error: OverlayctlError | None = None,
    phase: str | None = None,
) -> Outcome:
    """The Outcome of a run over SESSION: failed hosts, and ERROR if the run stopped on one.

    An error that stopped the run is also said on stderr, as one line, in every format.
    """
    errors = failure_entries(session.failures)
    code = ExitCode.FAILED
    if error is not None:
        click.echo(f"overlayctl: error: {printable(str(error))}", err=True)
        errors.append(error_entry(str(error), phase=phase))
        code = error.code
    return Outcome(text, doc, ok=not errors, errors=errors, code=code)


def report_doc(report: Any, log: Path | None) -> dict[str, Any]:
    """init/join/certs rotate: changes per host, the network config's fate, time and log."""
    return {
        "changes": report.total_changes,
        "hosts": {name: {"changes": count} for name, count in sorted(report.changes.items())},
        "network_config": report.network_config or None,
        "seconds": round(report.seconds, 2),
        "phases_s": {what: round(took, 2) for what, took in report.phases_s.items()},
        "log": str(log) if log else None,
    }


@dataclass
class Run:
    """A run over SESSION; ERROR is what stopped it, kept for the Outcome instead of raised."""

    session: Session
    error: OverlayctlError | None = None

    def ended(self, text: str, doc: dict[str, Any], phase: str | None = None) -> Outcome:
        return ended(self.session, text, doc, self.error, phase)


@contextmanager
def run_session(
    inv: Inventory, command: str, options: RunOptions, lock: bool, log: bool = True
) -> Iterator[Run]:
    """open_session, keeping an OverlayctlError that stops the block in Run.error (the command
    still prints what was done, and its document); the log is closed however it ends."""
    with open_session(inv, command, options, lock, log) as session:
        run = Run(session)
        try:
            yield run
        except OverlayctlError as exc:
            run.error = exc
        finally:
            session.reporter.close()
