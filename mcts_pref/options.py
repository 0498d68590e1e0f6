"""Typer options: built from config dataclasses, plus the few that belong to no config.

:func:`options_from` turns a dataclass's fields into a command's options, so
a knob's flag is its field name, and its default and help (field metadata,
see ``policy_spec.knob``) are written once, in the dataclass. The command
receives the dataclass built from them.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import MISSING, fields
from typing import Annotated, Callable, Optional, Sequence, get_type_hints

import typer


def option(cls: type, name: str, **override) -> object:
    """The typer annotation of the option for field ``name`` of ``cls`` (its default: ``cls.name``).

    ``override`` replaces keys of the field's metadata (``help``, ``short``),
    for a command whose knob means something narrower there. A bool is a flag
    (``--name``), or ``--name/--no-name`` when it defaults to True (a flag
    that is on already could not be turned off).
    """
    f = next(f for f in fields(cls) if f.name == name)
    meta = {**f.metadata, **override}
    typ = get_type_hints(cls)[name]
    flag = name.replace("_", "-")
    decls = [f"--{flag}/--no-{flag}" if typ is bool and f.default is True else f"--{flag}"]
    decls += [meta["short"]] if meta.get("short") else []
    return Annotated[typ, typer.Option(*decls, help=meta["help"])]


def options_from(cls: type, param: str, *, order: Sequence[str] | None = None,
                 exclude: Sequence[str] = ()) -> Callable:
    """Decorator: the command's parameter ``param`` becomes one option per field of ``cls``.

    The options stand where ``param`` stands, in field order; ``order`` (all
    parameter names, the command's own and the fields) places them otherwise,
    for a command whose help has always listed them interleaved. The command
    is called with ``param=cls(**those options)``.

    Fields with ``init=False`` are no options (the class computes them). Nor
    are the fields named in ``exclude``: the command declares each itself (an
    argument, a required option, a shared or another config's option), and
    its value goes into ``cls`` as well as to the command.
    """
    unknown = set(exclude) - {f.name for f in fields(cls)}
    if unknown:
        raise TypeError(f"exclude names no field of {cls.__name__}: {sorted(unknown)}")

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)  # typer reads the annotations as objects
        names = [f.name for f in fields(cls) if f.init]
        made = []
        for f in fields(cls):
            if not f.init or f.name in exclude:
                continue
            if f.default is MISSING:
                raise TypeError(f"{cls.__name__}.{f.name} needs a default to be an option")
            made.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                          annotation=option(cls, f.name)))
        own = list(sig.parameters.values())
        at = [p.name for p in own].index(param)
        params = own[:at] + made + own[at + 1:]
        if order is not None:
            by_name = {p.name: p for p in params}
            if sorted(order) != sorted(by_name):
                raise TypeError(f"order must name each parameter of {fn.__name__} once: {sorted(by_name)}")
            params = [by_name[n] for n in order]
        # The options are keyword-only, and a signature has no positional parameter after one.
        params = params[:at] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at:]]

        @functools.wraps(fn)
        def command(*args, **kwargs):
            spec = cls(**{n: kwargs[n] if n in exclude else kwargs.pop(n) for n in names if n in kwargs})
            return fn(*args, **{param: spec}, **kwargs)

        command.__signature__ = sig.replace(parameters=params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return wrap

Out = Annotated[Optional[str], typer.Option("--out", "-o", help="Write records here instead of stdout; an existing file is resumed.")]
# For stages that compute their whole output at once (merge, instance-pairs): nothing to resume.
OutReplaced = Annotated[
    Optional[str], typer.Option("--out", "-o", help="Write records here instead of stdout (replaced if it exists).")
]
Shard = Annotated[Optional[str], typer.Option("--shard", help="Process only problems with index % N == i, written 'i/N'.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
