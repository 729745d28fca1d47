"""The ``ropetool`` command line: a thin Click layer over the library.

Every command turns a RopetoolError (bad input) into a one-line ``Error: ...`` and exit code 2;
set ROPETOOL_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from ropetool.errors import RopetoolError
from ropetool.version import __version__


class Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's main, with its usage errors in one line (``Error: ... (see ropetool CMD --help)``) and a
        closed pipe (``ropetool convert --dry-run | head``) ending quietly."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            command = e.ctx.command_path if e.ctx is not None else (prog_name or "ropetool")
            _fail(f"{e.format_message()} (see {command} --help)", e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except BrokenPipeError:
            _quiet_broken_pipe()
        sys.exit(code if isinstance(code, int) else 0)  # ctx.exit(n) comes back as n when not standalone

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                # numpy's RuntimeWarning (overflow in a value the command then refuses) and RankWarning (one of
                # its subclasses, from a least-squares fit) are not the user's business: a command's errors come as its one line.
                warnings.simplefilter("ignore", RuntimeWarning)
                return super().invoke(ctx)
        except RopetoolError as e:
            _fail(str(e), 2)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except OSError as e:
            _fail(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", 2)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # pragma: no cover - a bug, reported in one line unless debugging
            if os.environ.get("ROPETOOL_DEBUG"):
                raise
            _fail(f"internal error ({type(e).__name__}: {e}); rerun with ROPETOOL_DEBUG=1 and report it", 70)


def _quiet_broken_pipe():
    """The reader of our output went away (``| head``): stop without an error, as cat does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    sys.exit(0)


def _fail(message: str, code: int):
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ropetool")
def cli():
    """Convert Hugging Face checkpoints to GGUF with RoPE/ALiBi context extension, and check them."""


from ropetool.cli import check, convert, edit, eval, inspect, quantize  # noqa: E402  (the command modules)

for _command in (convert.convert, quantize.quantize_command, inspect.inspect_command, edit.set_rope_command,
                 edit.set_command, edit.unset_command, edit.diff_command, check.check, eval.eval_command):
    cli.add_command(_command)


def main():
    if os.name != "posix":  # positional reads and writes, flock, rename of an open file
        sys.exit("Error: ropetool runs on Linux and macOS (on Windows, inside WSL)")
    cli(prog_name="ropetool")


if __name__ == "__main__":  # pragma: no cover
    main()
