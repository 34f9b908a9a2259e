"""``verify_integrity``: run the verification scripts of ops/sql and report what does not hold."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring import integrity


class Command(BaseCommand):
    help = "Check the stored state (duplicates, typed values, orphans, sync queue, ledger); exit 1 on a violation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME",
                            help=f"scripts to run (default: all of {', '.join(integrity.scripts())})")

    def handle(self, *args: object, names: list[str], **opts: object) -> None:
        try:
            violations = integrity.run(names)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for v in violations:
            self.stdout.write(f"{v.script}: {v.check}: {v.detail}")
        checked = ", ".join(names or integrity.scripts())
        if violations:
            raise CommandError(f"{len(violations)} violation(s) in {checked}")
        self.stdout.write(f"ok: {checked}")
