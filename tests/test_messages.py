"""The message vocabulary round-trips exactly through ``dumps`` / ``loads``.

Strategies are derived from each registered class's dataclass field
annotations, so a message added to ``twofold.messages`` is covered without
touching this file; an annotation the builder does not know fails loudly
(see ``test_every_field_annotation_has_a_strategy``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twofold import messages
from twofold.messages import REGISTRY, Message, ScatteredKey, TaskError, TaskSpec, dumps, loads, restamp

#: Registered records that nest inside messages and carry no now/stimulus_id.
NESTED_RECORDS = frozenset({TaskSpec, TaskError, ScatteredKey})

#: msgpack encodes integers in [-2**63, 2**64 - 1].
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

ALL_CLASSES = sorted(REGISTRY.values(), key=lambda cls: cls.__name__)
MESSAGE_CLASSES = [cls for cls in ALL_CLASSES if cls not in NESTED_RECORDS]

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------
# Strategies from annotations
# --------------------------------------------------------------------------


class NoStrategy(TypeError):
    """A field annotation the strategy builder does not know how to fill."""


_SCALARS: dict[object, st.SearchStrategy] = {
    str: st.text(max_size=20),
    int: st.integers(min_value=INT_MIN, max_value=INT_MAX),
    float: st.floats(allow_nan=False),  # infinities and -0.0 included
    bool: st.booleans(),
    bytes: st.binary(max_size=40),
    type(None): st.none(),
}


def strategy_for_type(tp: object, where: str) -> st.SearchStrategy:
    """A strategy for values of annotation ``tp``; ``where`` names the field for errors."""
    if tp in _SCALARS:
        return _SCALARS[tp]
    if isinstance(tp, type) and REGISTRY.get(tp.__name__) is tp:
        return strategy_for_class(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of([strategy_for_type(arg, where) for arg in args])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for_type(args[0], where), max_size=4).map(tuple)
        if args and Ellipsis not in args:
            return st.tuples(*(strategy_for_type(arg, where) for arg in args))
    if origin is dict and len(args) == 2:
        return st.dictionaries(
            strategy_for_type(args[0], where), strategy_for_type(args[1], where), max_size=4
        )
    raise NoStrategy(f"no strategy for annotation {tp!r} of {where}; teach test_messages.py about it")


def field_types(cls: type) -> dict[str, object]:
    hints = typing.get_type_hints(cls, vars(messages))
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def strategy_for_class(cls: type) -> st.SearchStrategy:
    """Instances of a registered class, every field drawn from its annotation."""
    field_strategies = {
        name: strategy_for_type(tp, f"{cls.__name__}.{name}") for name, tp in field_types(cls).items()
    }
    return st.fixed_dictionaries(field_strategies).map(lambda kwargs: cls(**kwargs))


def any_message() -> st.SearchStrategy:
    return st.one_of([strategy_for_class(cls) for cls in ALL_CLASSES])


# --------------------------------------------------------------------------
# Exact comparison
# --------------------------------------------------------------------------


def assert_identical(got: object, expected: object, path: str = "msg") -> None:
    """Same types all the way down (bool is not int, tuple is not list), exact floats."""
    assert type(got) is type(expected), f"{path}: {type(got).__name__} != {type(expected).__name__}"
    if isinstance(expected, float):
        assert got == expected and math.copysign(1.0, got) == math.copysign(1.0, expected), (
            f"{path}: {got!r} != {expected!r}"
        )
    elif isinstance(expected, tuple):
        assert len(got) == len(expected), f"{path}: length {len(got)} != {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_identical(g, e, f"{path}[{i}]")
    elif isinstance(expected, dict):
        assert list(got) == list(expected), f"{path}: keys {list(got)} != {list(expected)}"
        for k in expected:
            assert_identical(got[k], expected[k], f"{path}[{k!r}]")
    elif REGISTRY.get(type(expected).__name__) is type(expected):
        for f in dataclasses.fields(expected):
            assert_identical(getattr(got, f.name), getattr(expected, f.name), f"{path}.{f.name}")
    else:
        assert got == expected, f"{path}: {got!r} != {expected!r}"


def assert_no_lists(value: object, path: str = "msg") -> None:
    assert not isinstance(value, list), f"{path} decoded as a list"
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            assert_no_lists(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            assert_no_lists(k, f"{path} key {k!r}")
            assert_no_lists(v, f"{path}[{k!r}]")
    elif REGISTRY.get(type(value).__name__) is type(value):
        for f in dataclasses.fields(value):
            assert_no_lists(getattr(value, f.name), f"{path}.{f.name}")


# --------------------------------------------------------------------------
# The registry itself
# --------------------------------------------------------------------------


def test_registry_is_populated_and_keyed_by_class_name():
    assert len(REGISTRY) >= 10
    for op, cls in REGISTRY.items():
        assert cls.__name__ == op
        assert cls.op == op
        assert cls._field_names == tuple(f.name for f in dataclasses.fields(cls))


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_field_annotation_has_a_strategy(cls):
    # Raises NoStrategy (failing this test) for an annotation we cannot build.
    for name, tp in field_types(cls).items():
        strategy_for_type(tp, f"{cls.__name__}.{name}")


@pytest.mark.parametrize("tp", [list[str], set[int], object, dict[str, list[int]], tuple[str, ...] | list[str]])
def test_strategy_builder_fails_loudly_on_unknown_annotations(tp):
    with pytest.raises(NoStrategy, match="no strategy"):
        strategy_for_type(tp, "Fake.field")


def test_nested_records_are_exactly_the_non_message_classes():
    non_messages = {cls for cls in ALL_CLASSES if not issubclass(cls, Message)}
    assert non_messages == set(NESTED_RECORDS)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_messages_start_with_now_and_stimulus_id(cls):
    assert issubclass(cls, Message)
    names = [f.name for f in dataclasses.fields(cls)]
    assert names[:2] == ["now", "stimulus_id"], f"{cls.__name__} fields start with {names[:2]}"
    types_ = field_types(cls)
    assert types_["now"] is float
    assert types_["stimulus_id"] is str


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_every_registered_class_round_trips(cls, data):
    msg = data.draw(strategy_for_class(cls), label=cls.__name__)
    blob = dumps(msg)
    assert isinstance(blob, bytes)
    back = loads(blob)
    assert type(back) is type(msg)
    assert back == msg
    assert_identical(back, msg)
    assert_no_lists(back)
    # stable: encoding the decoded message gives the same bytes
    assert dumps(back) == blob


@SETTINGS
@given(batch=st.lists(any_message(), min_size=2, max_size=8).map(tuple))
def test_a_batch_of_messages_round_trips(batch):
    back = loads(dumps(batch))
    assert type(back) is tuple
    assert back == batch
    assert_identical(back, batch, "batch")
    assert_no_lists(back, "batch")


def test_sequences_given_as_lists_come_back_as_tuples():
    msg = messages.UpdateData(1.5, "s", "c", [ScatteredKey("k", 3, "int", ["w1", "w2"])])
    back = loads(dumps(msg))
    assert back.keys == (ScatteredKey("k", 3, "int", ("w1", "w2")),)
    assert_no_lists(back)


# --------------------------------------------------------------------------
# Frozen and slotted
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_every_class_is_frozen_and_slotted(cls, data):
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen
    for klass in cls.__mro__[:-1]:  # all but object
        assert "__slots__" in vars(klass), f"{klass.__name__} is not slotted"
    msg = data.draw(strategy_for_class(cls))
    assert not hasattr(msg, "__dict__")
    for f in dataclasses.fields(cls):
        before = getattr(msg, f.name)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(msg, f.name, before)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(msg, f.name)
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        msg.not_a_field = 1


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_constructor_follows_the_dataclass_fields(cls, data):
    # __init__ may be hand-generated (messages are built on every hop): it must keep the
    # dataclass signature, defaults included, positionally and by keyword
    msg = data.draw(strategy_for_class(cls))
    values = [getattr(msg, f.name) for f in dataclasses.fields(cls)]
    assert cls(*values) == msg
    required = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required[f.name] = getattr(msg, f.name)
    minimal = cls(**required)
    for f in dataclasses.fields(cls):
        if f.name in required:
            assert_identical(getattr(minimal, f.name), required[f.name], f"{cls.__name__}.{f.name}")
        elif f.default is not dataclasses.MISSING:
            assert_identical(getattr(minimal, f.name), f.default, f"{cls.__name__}.{f.name}")
        else:
            assert_identical(getattr(minimal, f.name), f.default_factory(), f"{cls.__name__}.{f.name}")
    with pytest.raises(TypeError):
        cls(*values, "one too many")


def test_message_decorator_honours_default_factory():
    try:

        @messages.message
        class _FactoryProbe(Message):
            keys: tuple[str, ...] = dataclasses.field(default_factory=tuple)

        assert _FactoryProbe(0.0, "s").keys == ()
    finally:
        REGISTRY.pop("_FactoryProbe", None)


# --------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Unregistered(Message):
    client: str


@dataclasses.dataclass(frozen=True, slots=True)
class _UnregisteredSubclass(messages.AddClient):
    extra: int = 0


class _Impostor:
    """Claims a registered op without being the registered class."""

    op = "AddClient"
    _field_names = ("now", "stimulus_id", "client")

    def __init__(self):
        self.now, self.stimulus_id, self.client = 0.0, "s", "c"


@pytest.mark.parametrize(
    "obj",
    [
        object(),
        {1, 2},
        _Unregistered(0.0, "s", "c"),
        _UnregisteredSubclass(0.0, "s", "c", 1),
        _Impostor(),
        Message(0.0, "s"),
        (messages.AddClient(0.0, "s", "c"), object()),
        messages.AddClient(0.0, "s", object()),
    ],
    ids=["object", "set", "unregistered", "unregistered-subclass", "impostor", "base", "in-batch", "in-field"],
)
def test_encoding_an_unregistered_object_raises_type_error(obj):
    with pytest.raises(TypeError):
        dumps(obj)


def _record(payload: object, code: int = 1) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True)), use_bin_type=True)


@pytest.mark.parametrize(
    "op",
    ["NoSuchOp", "", "addclient", "Message", b"AddClient", 42, None, 1.5, True, ("AddClient",)],
)
def test_decoding_an_unknown_op_raises_value_error(op):
    with pytest.raises(ValueError, match="unknown message op"):
        loads(_record([op, 0.0, "s", "c"]))
    # also when nested in a batch beside a valid message
    good = dumps(messages.AddClient(0.0, "s", "c"))
    with pytest.raises(ValueError, match="unknown message op"):
        loads(b"\x92" + good + _record([op, 0.0, "s", "c"]))


def test_decoding_an_unhashable_op_raises_value_error():
    with pytest.raises(ValueError):
        loads(_record([{"op": "AddClient"}, 0.0, "s", "c"]))


@pytest.mark.parametrize("code", [0, 2, 7, 127])
def test_decoding_an_unknown_ext_code_raises_value_error(code):
    valid_payload = ["AddClient", 0.0, "s", "c"]
    with pytest.raises(ValueError, match="unknown msgpack extension type"):
        loads(_record(valid_payload, code))


@pytest.mark.parametrize("code", [-2, -100, -128])
def test_decoding_a_reserved_negative_ext_code_raises_value_error(code):
    # fixext 1 (0xd4), the type byte, one data byte; msgpack-python will not pack these
    with pytest.raises(ValueError, match="unknown msgpack extension type"):
        loads(bytes([0xD4, code & 0xFF, 0]))


def test_decoding_the_timestamp_ext_code_raises_value_error():
    # fixext 4 (0xd6), type -1, 32-bit seconds = 1: a valid msgpack timestamp, not a twofold record
    with pytest.raises(ValueError):
        loads(bytes([0xD6, 0xFF, 0, 0, 0, 1]))


def test_record_helper_builds_what_dumps_builds():
    # _record must be a faithful encoding, or the refusal tests prove nothing
    assert loads(_record(["AddClient", 0.0, "s", "c"])) == messages.AddClient(0.0, "s", "c")


# --------------------------------------------------------------------------
# restamp
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=10, deadline=None)
@given(data=st.data(), now=st.floats(allow_nan=False))
def test_restamp_changes_now_only(cls, data, now):
    msg = data.draw(strategy_for_class(cls))
    original = loads(dumps(msg))  # an independent copy
    result = restamp(msg, now)
    assert result is msg
    assert_identical(msg.now, now, "now")
    for f in dataclasses.fields(cls):
        if f.name != "now":
            assert_identical(getattr(msg, f.name), getattr(original, f.name), f"{cls.__name__}.{f.name}")
    # the copy is untouched, and the restamped message still round-trips
    assert_identical(original, loads(dumps(original)))
    assert_identical(loads(dumps(msg)), msg)
