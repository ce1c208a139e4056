"""The command-line plumbing that `python -m tinygen` and `python -m tinygen.evaluate` share: the
one-line refusal (UsageError, OneLineParser, run_command) and the number parsers that check values at
the door. It imports nothing of the models, so both commands (and anything below them) may use it.

Every refusal is one line on stderr that names the option or the file and says what is valid, with
exit status 2. TINYGEN_TRACEBACK=1 shows the traceback as well. An interrupt is one line too, with the
shell's status for its signal (130 for Ctrl-C).
"""
import argparse
import json
import math
import os
import sys

FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max, without importing NumPy here


class UsageError(ValueError):
    """A command-line value that the command refuses (the message names the option)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def library_errors():
    """The exceptions that are the library refusing something, as opposed to a bug in it."""
    from .data import DatasetError
    from .io import CheckpointError
    from .nn.module import StateDictError
    return (UsageError, ValueError, RuntimeError, OSError, CheckpointError, DatasetError, StateDictError)


def run_command(main_fn, argv, prog):
    """Run main_fn(argv) and return its status; the library's errors become one line
    `prog: error: ...` on stderr and SystemExit(2), as argparse does for a bad argument."""
    import numpy as np
    try:
        with np.errstate(all="ignore"):  # NaN and overflow are caught and named by the library, not warned of
            return main_fn(argv)
    except KeyboardInterrupt as stop:  # Ctrl-C, or train.Interrupted: a signal, after the run was saved
        print(f"{prog}: {' '.join(str(stop).split()) or 'interrupted'}", file=sys.stderr)
        raise SystemExit(getattr(stop, "status", 130)) from None
    except library_errors() as error:
        if os.environ.get("TINYGEN_TRACEBACK"):
            raise
        text = " ".join(str(error).split()) or type(error).__name__  # one line, whatever the message
        print(f"{prog}: error: {text}", file=sys.stderr)
        raise SystemExit(2) from None


# ---------------------------------------------------------------------- values checked at the door
def whole_number(low):
    """argparse type: an integer >= low."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a whole number >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"whole number >= {low}"
    return parse


def finite_number(low, strict):
    """argparse type: a finite float > low (strict) or >= low."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if strict else '>='} {low:g}, got {text}")
        if abs(value) > FLOAT32_MAX:  # finite here, inf in the float32 the models compute in: NaN images
            raise argparse.ArgumentTypeError(f"must be finite in float32 (at most {FLOAT32_MAX:.4g}), got {text}")
        return value
    parse.__name__ = "number"
    return parse


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable on Linux), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(option, n, bytes_each):
    """Refuse a request of n items of bytes_each (a lower bound) that cannot fit in the memory available,
    before the work starts, rather than a MemoryError after it."""
    need, have = n * bytes_each, available_memory()
    if have is not None and need > have:
        raise UsageError(f"{option} {n}: needs at least {need / 2**30:.1f} GiB of memory ({bytes_each} bytes an "
                         f"item), {have / 2**30:.1f} GiB are available; ask for fewer")


def parse_settings(items):
    """['latent_dim=2', 'loss=minimax'] -> {'latent_dim': 2, 'loss': 'minimax'} (JSON values, else strings)."""
    settings = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set {item}: expects FIELD=VALUE, e.g. --set latent_dim=2")
        key, value = item.split("=", 1)
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
        if settings[key] is None:  # the library reads None as "the recipe's value": say so, do not ignore it
            raise UsageError(f"--set {item}: {key} takes a value; leave --set {key} out for the recipe's")
    return settings
