"""Entry point of `mars-eval`: builds the Typer app and turns library errors into one line and exit code 1."""

from __future__ import annotations

import sys

import typer

from mars_ref.errors import MarsRefError

app = typer.Typer(
    name="mars-eval",
    help="Train, sample, score and ablate autoregressive text-to-image models (reference: MARS, AAAI 2025).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _register() -> None:
    """Import each command module; each one adds itself to `app` (or a sub-app) on import."""
    import importlib
    import pkgutil

    import mars_eval.cli as pkg

    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
        if mod not in {"main", "common"}:
            importlib.import_module(f"mars_eval.cli.{mod}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error a user can cause ends as `error: <one line>` on stderr and exit code 1."""
    _register()
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="mars-eval")
    except MarsRefError as e:
        _fail(str(e))
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        _fail("aborted")
    except typer.TyperException as e:  # Typer's click layer: usage errors, bad parameters, no-args help
        if type(e).__name__ == "NoArgsIsHelpError":  # `no_args_is_help`: Typer has already shown the help
            return 0
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(e.format_message() + hint)
    except KeyboardInterrupt:
        _fail("interrupted")
    return rv if isinstance(rv, int) else 0


def _fail(message: str) -> None:
    one_line = " ".join(str(message).split())
    print(f"error: {one_line}", file=sys.stderr)
    sys.exit(1)


def entry() -> None:
    sys.exit(main())
