"""How ``ferwild`` commands print ``--help`` and report missing options.

typer's own help (0.2x) marks every option with a type in angle brackets, flags included
(``--help <bool>``), writes required arguments as ``{inputs}...`` and lays options out in
five columns that squeeze the descriptions to a few words at 80 columns. :class:`Command`
prints the classic two-column help that git, pip and click print instead::

    Usage: ferwild predict [OPTIONS] INPUTS...

    Options:
      -o, --out PATH            Output folder: ...  [required]
      --annotate / --no-annotate
                                Also write images and videos with boxes ...

and, when several required options are missing, names them all in one error instead of
one per attempt. It also holds what the commands' output shares: :func:`count` ("1 person",
"3 people") and :func:`output_console`, a rich console that wraps at the terminal's width in a
terminal and never wraps or cuts when the output goes to a file or a pipe.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from typer.core import TyperCommand

try:  # typer >= 0.20 vendors click; its exceptions are the ones typer's main loop catches
    from typer._click import exceptions as _errors
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as _errors

__all__ = ["Command", "CONTEXT_SETTINGS", "command_settings", "count", "default_text", "metavar",
           "output_console", "UNLIMITED_WIDTH"]

#: Use up to 100 columns when the terminal has them (click's default stops at 80).
CONTEXT_SETTINGS = {"max_content_width": 100}


def _is_argument(param: Any) -> bool:
    return param.param_type_name == "argument"


def metavar(param: Any, ctx: Any) -> str:
    """What an option's value looks like: PATH, INT, FLOAT, TEXT, a|b (nothing for a flag)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    shown = param.display_type(ctx) if hasattr(param, "display_type") else None  # typer: "<path>", "<a|b>"
    text = (shown or "value").strip("<>")
    if "|" in text:
        return text
    text = text.removeprefix("list[").removesuffix("]").upper()
    return {"STR": "TEXT"}.get(text, text)


def default_text(param: Any) -> str | None:
    """The ``[default: ...]`` text of an option, or None when there is nothing worth showing."""
    if param.show_default is False or param.required:
        return None
    if isinstance(param.show_default, str):
        return param.show_default
    default = param.default
    if callable(default) or default is None or (isinstance(default, (list, tuple)) and not default):
        return None
    if param.is_flag:
        if param.secondary_opts:  # --x / --no-x: say which one is in force
            return (param.opts if default else param.secondary_opts)[0].lstrip("-")
        return None  # a plain flag is off unless given
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(default, Path):
        default = str(default)
    return str(default)


class Command(TyperCommand):
    """A typer command with classic two-column help and one error for all missing options."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if _is_argument(param):
                name = (param.metavar or param.name or "ARG").upper()
                name += "..." if param.nargs != 1 else ""
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, " ".join(self.collect_usage_pieces(ctx)))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # click's own layout, bypassing typer's Rich panels
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        self.format_options(ctx, formatter)
        self.format_epilog(ctx, formatter)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            help_text = getattr(param, "help", None) or ""
            extra = []
            if _is_argument(param):
                name = (param.metavar or param.name or "ARG").upper() + ("..." if param.nargs != 1 else "")
                if param.required:
                    extra.append("required")
                arguments.append((name, _join(help_text, extra)))
                continue
            names = ", ".join(sorted(param.opts, key=lambda o: o.startswith("--")))
            if param.secondary_opts:
                names += " / " + ", ".join(param.secondary_opts)
            shown = metavar(param, ctx)
            default = default_text(param)
            if default is not None and param.name != "help":
                extra.append(f"default: {default}")
            if param.required:
                extra.append("required")
            options.append((f"{names} {shown}".rstrip(), _join(help_text, extra)))
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except _errors.MissingParameter as exc:
            missing = self._missing_options(ctx, given)
            if len(missing) > 1:
                raise _errors.UsageError(f"Missing options: {', '.join(missing)}.", ctx) from exc
            raise

    def _missing_options(self, ctx: Any, given: list[str]) -> list[str]:
        """The required options (by their longest name) that ``given`` does not set."""
        seen = {a.split("=", 1)[0] for a in given if a.startswith("-")}
        missing = []
        for param in self.get_params(ctx):
            if not _is_argument(param) and param.required and not (set(param.opts) & seen):
                missing.append(max(param.opts, key=len))
        return missing


def _join(text: str, extra: list[str]) -> str:
    return f"{text}  [{'; '.join(extra)}]" if extra else text


def command_settings(**extra: Any) -> dict[str, Any]:
    """``@app.command(**command_settings())``: the class and context settings of every command."""
    return {"cls": Command, "context_settings": {**CONTEXT_SETTINGS, **extra}}


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``n`` and the noun in the right number: ``count(1, "person", "people")`` -> "1 person",
    ``count(3, "face")`` -> "3 faces", ``count(0, "face")`` -> "0 faces"."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


#: The width of a console writing to a file or a pipe: in practice, no limit.
UNLIMITED_WIDTH = 100_000


def output_console(*, stderr: bool = False, width: int | None = None) -> Console:
    """A rich console for a command's output.

    ``width`` (a forced width, e.g. a test's ``terminal_width``) wins; in a terminal, rich
    wraps at the terminal's width; writing to a file or a pipe (no terminal, no ``COLUMNS``),
    nothing is wrapped or cut: a line stays one line and a table keeps its natural width, so
    names (``hf:google/vit-base-patch16-224-in21k``) come out whole for ``grep`` and scripts.
    """
    if width is not None:
        return Console(stderr=stderr, width=width)
    stream = sys.stderr if stderr else sys.stdout
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        terminal = False
    if terminal or os.environ.get("COLUMNS", "").isdigit():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=UNLIMITED_WIDTH, soft_wrap=True)
