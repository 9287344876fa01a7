"""Help output tidying shared by every ``vitcop`` command group.

Typer (0.2x) prints a type column in help (``<str>``, ``<int>``), and for flags that column says
``<bool>``, which reads as if the flag took a value. :class:`VitcopGroup` blanks the type column of
every flag (``--json``, ``--stream/--no-stream``, ``--help`` itself) of the group and of each
command as it is looked up, so help shows ``--json    Print ...`` instead. Nothing else changes:
parsing is untouched. Use as ``typer.Typer(cls=VitcopGroup)``.
"""

from __future__ import annotations

from typer.core import TyperGroup

__all__ = ["VitcopGroup"]


def _blank_flag_metavars(command, ctx) -> None:
    params = list(getattr(command, "params", []))
    help_option = command.get_help_option(ctx) if hasattr(command, "get_help_option") else None
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class VitcopGroup(TyperGroup):
    """A TyperGroup whose help (and its commands' help) shows no ``<bool>`` for flags."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _blank_flag_metavars(command, ctx)
        return command

    def format_help(self, ctx, formatter):
        _blank_flag_metavars(self, ctx)
        return super().format_help(ctx, formatter)
