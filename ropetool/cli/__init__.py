"""The ``ropetool`` command line: a thin Click layer over the library.

Every command turns a RopetoolError (bad input) into a one-line ``Error: ...`` and exit code 2;
set ROPETOOL_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import click

from ropetool.errors import RopetoolError
from ropetool.version import __version__

# The commands: name -> (where the command is, its short help).  A command's module (and numpy, gguf-py and
# the library under it) is imported only when that command is run or asked for its --help, so that
# `ropetool --help` and shell completion start in the time of click alone.  The short help is the first
# paragraph of the command's docstring, kept here (tests/test_startup.py checks that the two agree).
COMMANDS = {
    "extend": ("ropetool.cli.extend:extend_command",
               "Extend MODEL (a GGUF or a Hugging Face folder) to N tokens: the file, proven, its memory, how to run it."),
    "convert": ("ropetool.cli.convert:convert", "Convert the Hugging Face model in MODEL_DIR to GGUF."),
    "quantize": ("ropetool.cli.quantize:quantize_command",
                 "Quantize FILE with llama.cpp's own quantizer, keeping every key (the rope settings and ropetool's record)."),
    "inspect": ("ropetool.cli.inspect:inspect_command",
                "Show a GGUF's metadata, tensors, RoPE/ALiBi settings in plain words, and lint findings."),
    "set-rope": ("ropetool.cli.edit:set_rope_command", "Change the position-encoding method of FILE without reconverting."),
    "set": ("ropetool.cli.edit:set_command", "Add or replace typed keys in FILE."),
    "unset": ("ropetool.cli.edit:unset_command", "Remove keys from FILE."),
    "diff": ("ropetool.cli.edit:diff_command",
             "Compare two GGUFs: metadata and tensors (bytes by streamed sha256). Exit 0 if identical, 1 if not."),
    "check": ("ropetool.cli.check:check", "Check that llama.cpp computes the rope setting GGUF_FILE means."),
    "eval": ("ropetool.cli.eval:eval_command",
             "Evaluate GGUF_FILE's rope setting and tried ones: perplexity by position and length, passkey and lines retrieval."),
}


class Group(click.Group):
    """A group whose commands (``lazy``: name -> ("module:attribute", short help)) are imported when first
    looked up; the listing in --help and shell completion use the short help and import nothing."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name][0].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except getattr(click.exceptions, "NoSuchCommand", ()) as e:  # click >= 8.4: "Did you mean ...?" from every name
            raise type(e)(e.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None

    def _listed(self, ctx, incomplete: str = ""):
        """(name, command) for the listing and completion: the command once imported, else a stand-in with its
        short help, which click shortens to the width exactly as it would the command's own docstring."""
        for name in self.list_commands(ctx):
            if name.startswith(incomplete):
                command = self.commands.get(name) or click.Command(name, help=self.lazy[name][1])
                if not command.hidden:
                    yield name, command

    def format_commands(self, ctx, formatter):
        commands = list(self._listed(ctx))
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)  # as click.Group lays it out
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in commands])

    def shell_complete(self, ctx, incomplete):
        from click.shell_completion import CompletionItem

        items = [CompletionItem(name, help=command.get_short_help_str()) for name, command in self._listed(ctx, incomplete)]
        return items + click.Command.shell_complete(self, ctx, incomplete)  # the group's own options

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


@click.group(cls=Group, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ropetool")
def cli():
    """Convert Hugging Face checkpoints to GGUF with RoPE/ALiBi context extension, and check them."""



def main():
    if os.name != "posix":  # positional reads and writes, flock, rename of an open file
        sys.exit("Error: ropetool runs on Linux and macOS (on Windows, inside WSL)")
    cli(prog_name="ropetool")


if __name__ == "__main__":  # pragma: no cover
    main()
