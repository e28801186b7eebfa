"""Value classes without the cost of ``dataclasses``: ``@record`` and ``field``.

``import dataclasses`` loads ``inspect`` (with ``ast``, ``dis`` and ``tokenize``), and every
``@dataclass`` compiles its generated methods: 16 ms for the import and 1 to 3 ms per class
on the machines ekl targets. ekl's start path defines eighteen value classes, so they
cost ``ekl-python`` and every ``ekl`` command about 45 ms, longer than the plugin it starts
takes to boot (docs/performance.md). A record builds the same methods from closures over
its field list, compiles nothing, and takes about 0.1 ms per class.

It is the subset of ``dataclasses`` ekl uses, with the same spelling and defaults, so a
class converts by changing its decorator: fields from the class annotations in order
(base records' fields first), ``field(default=, default_factory=, compare=, repr=)``,
``frozen``, ``__post_init__``, ``__eq__`` and (frozen) ``__hash__`` over the compared
fields, a ``repr`` of the shown ones, ``__match_args__``, and ``fields``/``replace``/
``asdict``. Left out: ``init=False`` fields, ``InitVar``, ``KW_ONLY``, ``order``,
``slots`` and ``__dataclass_fields__``, so ``dataclasses.fields`` does not read a record;
use this module's.

One difference: ``__init__`` takes ``*args, **kwargs`` and checks them itself, so its
signature does not name the fields at run time (type checkers see them through
``dataclass_transform``). A wrong call raises the ``TypeError`` Python would.
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Tuple, TypeVar
    T = TypeVar("T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_kw: Any) -> Callable[[Any], Any]:
        return lambda f: f

__all__ = ["MISSING", "Field", "FrozenInstanceError", "asdict", "field", "fields", "record",
           "replace"]



class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: A field with no default (``Field.default`` and ``Field.default_factory``).
MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen record (``dataclasses`` raises its own of the same
    name, also an ``AttributeError``)."""


class Field:
    """One field of a record, as ``fields`` reports it."""

    __slots__ = ("name", "default", "default_factory", "compare", "repr")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING,
                 compare: bool = True, repr: bool = True) -> None:  # noqa: A002
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.repr = repr

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, compare={self.compare}, "
                f"repr={self.repr})")


def field(*, default: Any = MISSING, default_factory: Any = MISSING, compare: bool = True,
          repr: bool = True) -> Any:  # noqa: A002
    """A field's default or factory, and whether it counts in ``==`` and ``repr``."""
    return Field(default, default_factory, compare, repr)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _collect(cls: type) -> Tuple[Field, ...]:
    found: Dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in getattr(base, "__record_fields__", ()):
            found[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name = name
        if isinstance(f.default, (list, dict, set)):
            raise ValueError(f"{cls.__qualname__}.{name}: mutable default "
                             f"{type(f.default).__name__} is shared; use default_factory")
        if f.default is MISSING:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, f.default)
        found[name] = f  # a base's field redefined keeps its place, as in dataclasses
    seen_default = ""
    for f in found.values():
        if f.default is not MISSING or f.default_factory is not MISSING:
            seen_default = f.name
        elif seen_default:
            raise TypeError(f"{cls.__qualname__}: non-default field {f.name!r} follows "
                            f"default field {seen_default!r}")
    return tuple(found.values())


def _init(cls: type, flds: Tuple[Field, ...]) -> Callable[..., None]:
    names = tuple(f.name for f in flds)
    count = len(names)
    #: every field in order: its default, or MISSING for required and factory fields
    template = {f.name: f.default for f in flds}
    factories = tuple((f.name, f.default_factory) for f in flds
                      if f.default_factory is not MISSING)
    #: fields with neither a default nor a factory
    required = tuple(f.name for f in flds
                     if f.default is MISSING and f.default_factory is MISSING)
    post_init = getattr(cls, "__post_init__", None)
    qualname = cls.__qualname__

    def fail(args: tuple, kw: Dict[str, Any]) -> None:
        if len(args) > count:
            raise TypeError(f"{qualname}() takes {count} positional arguments but "
                            f"{len(args)} were given")
        for name in kw:
            if name not in template:
                raise TypeError(f"{qualname}() got an unexpected keyword argument {name!r}")
        for name, _ in zip(names, args):
            if name in kw:
                raise TypeError(f"{qualname}() got multiple values for argument {name!r}")
        given = set(names[:len(args)]) | set(kw)
        missing = [n for n in required if n not in given]
        raise TypeError(f"{qualname}() missing required argument(s): "
                        f"{', '.join(map(repr, missing))}")

    def __init__(self: Any, *args: Any, **kw: Any) -> None:
        d = self.__dict__
        d.update(template)
        if args:
            if len(args) > count or any(n in kw for n in names[:len(args)]):
                d.clear()
                fail(args, kw)
            d.update(zip(names, args))
        d.update(kw)
        if len(d) != count:
            d.clear()
            fail(args, kw)
        for name, make in factories:
            if d[name] is MISSING:
                d[name] = make()
        for name in required:
            if d[name] is MISSING:
                d.clear()
                fail(args, kw)
        if post_init is not None:
            post_init(self)

    return __init__


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(field_specifiers=(field,))
def record(cls: Optional[type] = None, *, frozen: bool = False, eq: bool = True,
           repr: bool = True) -> Any:  # noqa: A002
    """``@dataclass`` for ekl's value classes, with its defaults (mutable, compared)."""

    def wrap(c: type) -> type:
        flds = _collect(c)
        c.__record_fields__ = flds  # type: ignore[attr-defined]
        c.__match_args__ = tuple(f.name for f in flds)  # type: ignore[attr-defined]
        if "__init__" not in c.__dict__:
            c.__init__ = _init(c, flds)  # type: ignore[misc]
        if repr and "__repr__" not in c.__dict__:
            shown = tuple(f.name for f in flds if f.repr)

            def __repr__(self: Any) -> str:
                d = self.__dict__
                return (f"{type(self).__qualname__}("
                        f"{', '.join(f'{n}={d[n]!r}' for n in shown)})")
            c.__repr__ = __repr__  # type: ignore[method-assign]
        if eq and "__eq__" not in c.__dict__:
            compared = tuple(f.name for f in flds if f.compare)
            key: Callable[[Any], Any] = (attrgetter(*compared) if len(compared) > 1 else
                                         (lambda o, g=attrgetter(*compared): (g(o),))
                                         if compared else (lambda o: ()))

            def __eq__(self: Any, other: Any) -> Any:
                if other.__class__ is not self.__class__:
                    return NotImplemented
                return key(self) == key(other)
            c.__eq__ = __eq__  # type: ignore[method-assign,assignment]
            if frozen:
                c.__hash__ = lambda self: hash(key(self))  # type: ignore[method-assign]
            elif "__hash__" not in c.__dict__:
                c.__hash__ = None  # type: ignore[assignment]
        if frozen:
            c.__setattr__ = _frozen_setattr  # type: ignore[method-assign,assignment]
            c.__delattr__ = _frozen_delattr  # type: ignore[method-assign,assignment]
        return c

    return wrap if cls is None else wrap(cls)


def fields(obj: Any) -> Tuple[Field, ...]:
    """The fields of a record class or instance, in order."""
    try:
        return obj.__record_fields__  # type: ignore[no-any-return]
    except AttributeError:
        raise TypeError(f"{obj!r} is not a record") from None


def replace(obj: T, **changes: Any) -> T:
    """A copy of ``obj`` with ``changes``; ``__init__`` and ``__post_init__`` check it."""
    values = {f.name: obj.__dict__[f.name] for f in fields(obj)}
    values.update(changes)
    return type(obj)(**values)


def asdict(obj: Any) -> Any:
    """A record as plain dicts and lists, recursively (tuples stay tuples)."""
    if hasattr(type(obj), "__record_fields__"):
        return {f.name: asdict(obj.__dict__[f.name]) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(v) for v in obj)
    if isinstance(obj, dict):
        return {asdict(k): asdict(v) for k, v in obj.items()}
    return obj
