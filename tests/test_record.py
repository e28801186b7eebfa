"""``ekuiper.record``: ekl's value classes behave as the dataclasses they replaced.

The property test builds the same class both ways (``@record`` and ``@dataclass``) from
generated field lists and calls both with the same generated arguments: each call must be
accepted or refused alike, and accepted ones must hold the same values, compare and hash
alike and print the same ``repr``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ekuiper import record as rec
from ekuiper.record import FrozenInstanceError, asdict, field, fields, record, replace


@record(frozen=True)
class Point:
    """A frozen record with a default and a factory."""

    x: int
    y: int = 0
    tags: Tuple[str, ...] = field(default_factory=tuple)
    note: str = field(default="", compare=False, repr=False)
    KIND: ClassVar[str] = "point"


@record
class Box:
    items: List[int] = field(default_factory=list)
    label: Optional[str] = None


def test_a_frozen_record_compares_hashes_and_refuses_assignment():
    a, b = Point(1, 2, note="a"), Point(1, 2, note="b")
    assert a == b and hash(a) == hash(b)  # note is not compared
    assert a != Point(1, 3) and Point(1) == Point(x=1, y=0)
    assert repr(a) == "Point(x=1, y=2, tags=())"
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'x'"):
        a.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del a.y  # type: ignore[misc]
    assert Point.KIND == "point" and [f.name for f in fields(Point)] == ["x", "y", "tags", "note"]
    assert a.__match_args__ == ("x", "y", "tags", "note")


def test_a_mutable_record_gets_a_fresh_factory_value_and_no_hash():
    a, b = Box(), Box()
    a.items.append(1)
    assert b.items == [] and a != b
    a.label = "x"
    assert a.label == "x"
    with pytest.raises(TypeError):
        hash(a)


def test_replace_fields_and_asdict():
    p = Point(1, tags=("a",))
    q = replace(p, y=5)
    assert (q.x, q.y, q.tags) == (1, 5, ("a",)) and p.y == 0
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        replace(p, z=1)
    assert asdict(Box([1, 2], "l")) == {"items": [1, 2], "label": "l"}
    assert asdict(Point(1)) == {"x": 1, "y": 0, "tags": (), "note": ""}
    with pytest.raises(TypeError, match="not a record"):
        fields(object())


def test_wrong_calls_raise_what_python_would():
    with pytest.raises(TypeError, match="missing required argument"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 4 positional arguments but 5 were given"):
        Point(1, 2, (), "", 9)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=2)  # type: ignore[call-arg]


def test_class_definitions_that_dataclasses_refuse_are_refused():
    with pytest.raises(ValueError, match="mutable default"):
        @record
        class Bad:
            items: list = []  # noqa: RUF012

    with pytest.raises(TypeError, match="non-default field 'b' follows default field 'a'"):
        @record
        class Order:
            a: int = 1
            b: int  # type: ignore[misc]


def test_inheritance_post_init_and_own_methods():
    @record(frozen=True)
    class Base:
        a: int
        b: int = 2

        def total(self) -> int:
            return self.a + self.b

    @record(frozen=True)
    class Child(Base):
        c: int = 3

        def __post_init__(self) -> None:
            if self.c < 0:
                raise ValueError("c must not be negative")

    ch = Child(1)
    assert (ch.a, ch.b, ch.c, ch.total()) == (1, 2, 3, 3)

    @record(frozen=True)
    class Again(Base):
        a: int = 7  # redefined: keeps its place

    assert [f.name for f in fields(Again)] == ["a", "b"] and Again().total() == 9
    assert [f.name for f in fields(Child)] == ["a", "b", "c"]
    assert Child(1) != Base(1)  # another class never compares equal
    with pytest.raises(ValueError, match="negative"):
        Child(1, c=-1)


def test_importing_record_loads_neither_dataclasses_nor_typing():
    code = ("import sys, ekuiper.record\n"
            "print([m for m in ('dataclasses', 'inspect', 'typing') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# --- the same class, two ways --------------------------------------------------------

NAMES = ["a", "b", "c", "d", "e"]
VALUES = st.one_of(st.integers(-3, 3), st.text(max_size=2), st.none(),
                   st.tuples(st.integers(0, 2)))


@st.composite
def specs(draw: Any) -> Tuple[bool, List[Tuple[str, str, Any, bool]]]:
    """(frozen, [(name, kind, default, compare)]) with kind in required/default/factory,
    in an order both accept (no required field after a defaulted one)."""
    frozen = draw(st.booleans())
    names = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=5, unique=True))
    n_required = draw(st.integers(0, len(names)))
    out = []
    for i, name in enumerate(names):
        kind = "required" if i < n_required else draw(st.sampled_from(["default", "factory"]))
        out.append((name, kind, draw(VALUES), draw(st.booleans())))
    return frozen, out


def build(decorator: Any, make_field: Any, frozen: bool,
          spec: List[Tuple[str, str, Any, bool]]) -> type:
    ns: Dict[str, Any] = {"__annotations__": {}}
    for name, kind, default, compare in spec:
        ns["__annotations__"][name] = "Any"
        if kind == "default":
            ns[name] = make_field(default=default, compare=compare)
        elif kind == "factory":
            ns[name] = make_field(default_factory=lambda d=default: d, compare=compare)
        elif not compare:
            ns[name] = make_field(compare=False)
    return decorator(frozen=frozen)(type("C", (), ns))


CALLS = st.tuples(st.lists(VALUES, max_size=6),
                  st.dictionaries(st.sampled_from(NAMES + ["zz"]), VALUES, max_size=4))


@settings(max_examples=300, deadline=None)
@given(specs(), CALLS, CALLS)
def test_a_record_behaves_as_the_dataclass_it_replaces(spec, call1, call2):
    frozen, fl = spec
    R = build(record, rec.field, frozen, fl)
    D = build(dataclasses.dataclass, dataclasses.field, frozen, fl)

    def make(cls: type, call: Tuple[List[Any], Dict[str, Any]]) -> Any:
        try:
            return cls(*call[0], **call[1])
        except TypeError:
            return TypeError

    r1, d1 = make(R, call1), make(D, call1)
    r2, d2 = make(R, call2), make(D, call2)
    assert (r1 is TypeError) == (d1 is TypeError)
    assert (r2 is TypeError) == (d2 is TypeError)
    if r1 is TypeError or r2 is TypeError:
        return
    names = [f.name for f in dataclasses.fields(D)]
    assert [f.name for f in fields(R)] == names
    assert [getattr(r1, n) for n in names] == [getattr(d1, n) for n in names]
    assert (r1 == r2) == (d1 == d2)
    assert repr(r1) == repr(d1)
    if frozen:
        assert hash(r1) == hash(d1) and hash(r2) == hash(d2)
    else:
        assert R.__hash__ is None and D.__hash__ is None
