"""Every environment flag the package reads, declared once, parsed one way.

Each flag is a :class:`Flag`: its name, its kind (a switch or a choice), its
default, its allowed values and one line of doc. :func:`read_settings` parses
all of them into one frozen :class:`Settings`; the SGLang backend does that
once, when it is built, and hands the result down (the kernel choice carries
it), so nothing on a step's path reads the environment.

A value outside a flag's allowed values is a :class:`FlagError` naming the
flag and what it takes; the plugin turns it into one log line at start-up and
leaves SGLang's backend in place. Switches take ``1/true/yes/on/y`` and
``0/false/no/off/n`` (any case); unset or empty is the default.

``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL`` is SGLang's own flag: where SGLang is
installed it is read through SGLang's ``envs`` (its parsing and default), and
this module's declaration is used only without SGLang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Tuple

SWITCH_ON = ("1", "true", "yes", "on", "y")
SWITCH_OFF = ("0", "false", "no", "off", "n")


class FlagError(ValueError):
    """A flag holds a value it does not take; the message names the flag and its allowed values."""


@dataclass(frozen=True)
class Flag:
    name: str
    default: str
    choices: Tuple[str, ...]  # empty for a switch
    doc: str

    @property
    def is_switch(self) -> bool:
        return not self.choices

    def allowed(self) -> str:
        values = SWITCH_ON + SWITCH_OFF if self.is_switch else self.choices
        return ", ".join(values)

    def parse(self, environ: Mapping[str, str]):
        """This flag's value in ``environ`` (a bool for a switch, a str for a choice)."""
        raw = environ.get(self.name, "")
        value = raw.strip().lower() or self.default
        if self.is_switch:
            if value in SWITCH_ON:
                return True
            if value in SWITCH_OFF:
                return False
        elif value in self.choices:
            return value
        raise FlagError(f"{self.name}={raw!r} is not allowed: use one of {self.allowed()}")


ENABLE = Flag("SGLANG_DSV4_SPARSE", "1", (), "0 leaves SGLang's DSv4 attention backend untouched")
KERNELS = Flag(
    "SGLANG_DSV4_SPARSE_KERNELS", "auto", ("auto", "flashmla", "triton"),
    "which attention kernels run: FlashMLA where it can (auto), or one forced",
)
PREFILL_ROUTE = Flag(
    "SGLANG_DSV4_SPARSE_PREFILL_ROUTE", "auto", ("auto", "ours", "index", "sglang"),
    "sparse-prefill layer routes: auto (the measured route table), ours (this package's routes on every "
    "layer), index (one index row a query on every layer), sglang (SGLang's attention on every layer)",
)
CHECK_BOUNDS = Flag(
    "SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "0", (),
    "1 range-checks every id, position and length and raises ValueError naming the argument (host syncs)",
)
ROUTE_TABLE = Flag(
    "SGLANG_DSV4_SPARSE_ROUTE_TABLE", "", (),
    "path of a route table JSON to use instead of the one shipped for the GPU (empty: the shipped one)",
)
SPARSE_PREFILL = Flag(
    "SGLANG_OPT_FLASHMLA_SPARSE_PREFILL", "1", (),
    "SGLang's flag: extends take the sparse prefill route (read through SGLang's envs where installed)",
)
# ROUTE_TABLE holds a path, not a switch: parsed by read_settings, not Flag.parse.
FLAGS = (ENABLE, KERNELS, PREFILL_ROUTE, CHECK_BOUNDS, ROUTE_TABLE, SPARSE_PREFILL)


@dataclass(frozen=True)
class Settings:
    """The flags as read once; see :data:`FLAGS` for what each means."""

    enabled: bool = True
    kernels: str = "auto"
    prefill_route: str = "auto"
    check_bounds: bool = False
    route_table: Optional[str] = None


def sparse_prefill_flag(environ: Optional[Mapping[str, str]] = None) -> bool:
    """SGLang's ``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL`` now: through its ``envs`` when SGLang imports
    (:func:`sparse_prefill_reader`), else parsed here; ``environ`` given: parsed from it."""
    if environ is not None:
        return SPARSE_PREFILL.parse(environ)
    return bool(sparse_prefill_reader()())


def sparse_prefill_reader() -> Callable[[], bool]:
    """A reader of SGLang's flag, resolved once: SGLang's own ``envs`` accessor where SGLang imports.

    SGLang reads this flag at every step (its backend's ``_use_sparse_prefill``),
    and a layer we hand to SGLang takes whichever route SGLang reads there, so
    our router reads it the same way, through the accessor resolved here (no
    import per step). Without SGLang the value is parsed once.
    """
    try:
        from sglang.srt.environ import envs

        return getattr(envs, SPARSE_PREFILL.name).get
    except (ImportError, AttributeError):
        value = SPARSE_PREFILL.parse(os.environ)
        return lambda: value


def read_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Parse this package's flags; raises :class:`FlagError` for the first bad value.

    SGLang's own ``SGLANG_OPT_FLASHMLA_SPARSE_PREFILL`` is read as SGLang reads it
    (:func:`sparse_prefill_reader`); :func:`bad_flags` still checks its value.
    """
    env = os.environ if environ is None else environ
    table = env.get(ROUTE_TABLE.name, "").strip() or None
    return Settings(
        enabled=ENABLE.parse(env),
        kernels=KERNELS.parse(env),
        prefill_route=PREFILL_ROUTE.parse(env),
        check_bounds=CHECK_BOUNDS.parse(env),
        route_table=table,
    )


def bad_flags(environ: Optional[Mapping[str, str]] = None) -> list:
    """One message per flag whose value is not allowed (empty when all are fine)."""
    env = os.environ if environ is None else environ
    errors = []
    for flag in FLAGS:
        if flag is ROUTE_TABLE:
            continue
        try:
            flag.parse(env)
        except FlagError as err:
            errors.append(str(err))
    return errors
