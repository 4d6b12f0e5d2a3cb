"""The message vocabulary round-trips exactly through ``dumps`` / ``loads``.

Strategies are derived from each registered class's dataclass field
annotations, so a message added to ``twofold.messages`` is covered without
touching this file; an annotation the builder does not know fails loudly
(see ``test_every_field_annotation_has_a_strategy``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import types
import typing

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twofold.runtime.protocol  # noqa: F401 - the runtime's own messages share the codec: cover them too
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
    if tp is dict:  # an untyped dict (e.g. a serialization header): str keys, plain values
        plain = st.one_of(*_SCALARS.values(), st.lists(_SCALARS[int], max_size=3).map(tuple))
        return st.dictionaries(_SCALARS[str], plain, max_size=4)
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
    assert dataclasses.is_dataclass(cls)  # frozen by behaviour (shared __setattr__): checked below
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


@pytest.mark.parametrize("how", ["init", "build"])
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_constructor_follows_the_dataclass_fields(cls, how, data):
    # __init__ is hand-generated and the hot paths use cls.build (a twin class, then
    # __class__ assigned): both must keep the dataclass signature, defaults included,
    # positionally and by keyword, and give a frozen instance of cls itself
    make = cls if how == "init" else cls.build
    msg = data.draw(strategy_for_class(cls))
    values = [getattr(msg, f.name) for f in dataclasses.fields(cls)]
    made = make(*values)
    assert type(made) is cls
    assert made == msg
    assert_identical(made, msg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, dataclasses.fields(cls)[0].name, None)
    required = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required[f.name] = getattr(msg, f.name)
    minimal = make(**required)
    for f in dataclasses.fields(cls):
        if f.name in required:
            assert_identical(getattr(minimal, f.name), required[f.name], f"{cls.__name__}.{f.name}")
        elif f.default is not dataclasses.MISSING:
            assert_identical(getattr(minimal, f.name), f.default, f"{cls.__name__}.{f.name}")
        else:
            assert_identical(getattr(minimal, f.name), f.default_factory(), f"{cls.__name__}.{f.name}")
    with pytest.raises(TypeError):
        make(*values, "one too many")
    if issubclass(cls, Message):  # decoding builds the same way: frozen cls instances too
        back = loads(dumps(msg))
        assert type(back) is cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(back, "now", 0.0)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_messages_pickle_and_copy(cls, data):
    msg = data.draw(strategy_for_class(cls))
    for back in (pickle.loads(pickle.dumps(msg)), copy.copy(msg), copy.deepcopy(msg)):
        assert type(back) is cls
        assert back == msg
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(back, dataclasses.fields(cls)[0].name, None)


def test_message_decorator_honours_default_factory():
    try:

        @messages.message
        class _FactoryProbe(Message):
            keys: tuple[str, ...] = dataclasses.field(default_factory=tuple)

        assert _FactoryProbe(0.0, "s").keys == ()
        assert loads(dumps(_FactoryProbe(0.0, "s"))) == _FactoryProbe(0.0, "s")
    finally:
        _forget("_FactoryProbe")


# --------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------


@messages.frozen
class _Unregistered(Message):
    client: str


@messages.frozen
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
        messages.AddWorker(0.0, "s", "w", 2**64),
    ],
    ids=[
        "object", "set", "unregistered", "unregistered-subclass", "impostor", "base", "in-batch", "in-field",
        "huge-int",
    ],  # fmt: skip
)
def test_encoding_an_unregistered_object_raises_type_error(obj):
    with pytest.raises(TypeError):
        dumps(obj)


def test_a_record_outside_a_field_annotated_with_it_is_refused():
    spec = TaskSpec("k", None)
    with pytest.raises(TypeError):
        dumps(messages.AddClient(0.0, "s", spec))  # a str field
    with pytest.raises(TypeError):
        dumps(messages.DesireKeys(0.0, "s", "c", (spec,)))  # tuple[Key, ...]
    with pytest.raises(TypeError):
        dumps({"msg": messages.AddClient(0.0, "s", "c")})  # messages live in batches, not in dicts


@pytest.mark.parametrize(
    "msg",
    [
        messages.TaskErred(0.0, "s", "w", "k", "not a TaskError"),
        messages.TaskErred(0.0, "s", "w", "k", TaskSpec("k", None)),
        messages.KeyErred(0.0, "s", "c", "k", None, "k"),
        messages.UpdateGraph(0.0, "s", "c", (TaskError("E", "m"),), ()),
        messages.UpdateGraph(0.0, "s", "c", (("k", None),), ()),
        messages.UpdateGraph(0.0, "s", "c", "k", ()),
        messages.UpdateGraph(0.0, "s", "c", None, ()),
        messages.UpdateData(0.0, "s", "c", (ScatteredKey("k", 1, "int", ()), "k")),
    ],
    ids=[
        "str-error", "spec-error", "none-error", "error-in-tasks", "tuple-in-tasks", "str-tasks", "none-tasks",
        "str-in-keys",
    ],  # fmt: skip
)
def test_encoding_a_record_field_holding_something_else_raises_type_error(msg):
    with pytest.raises(TypeError):
        dumps(msg)
    with pytest.raises(TypeError):
        dumps([msg])


@pytest.mark.parametrize("item", ["AddClient", ("AddClient", 0.0, "s", "c"), ["x"]])
def test_a_batch_item_loads_would_read_as_a_message_is_refused(item):
    with pytest.raises(TypeError, match="item of a batch"):
        dumps([messages.AddClient(0.0, "s", "c"), item])


# --------------------------------------------------------------------------
# The wire format
# --------------------------------------------------------------------------


def _record(payload: object) -> bytes:
    """``payload`` packed as it is: a hand-built wire record (a message is ``[op, *fields]``)."""
    return msgpack.packb(payload, use_bin_type=True)


def test_record_helper_builds_what_dumps_builds():
    # _record must be a faithful encoding, or the refusal tests prove nothing
    msg = messages.AddClient(0.0, "s", "c")
    assert _record(["AddClient", 0.0, "s", "c"]) == dumps(msg)
    assert _record([["AddClient", 0.0, "s", "c"]]) == dumps([msg]) == dumps((msg,))
    assert loads(_record(["AddClient", 0.0, "s", "c"])) == msg
    assert loads(_record([["AddClient", 0.0, "s", "c"]] * 2)) == (msg, msg)


def test_a_message_is_a_flat_array_and_its_records_carry_no_op():
    spec = TaskSpec("k", b"f", ("a",), 3, None, False, {"GPU": 1.0}, 2, False)
    msg = messages.UpdateGraph(1.5, "s", "c", (spec,), ("k",))
    assert msgpack.unpackb(dumps(msg), use_list=False) == (
        "UpdateGraph", 1.5, "s", "c", (("k", b"f", ("a",), 3, None, False, {"GPU": 1.0}, 2, False),), ("k",)
    )  # fmt: skip
    error = TaskError("ValueError", "bad", b"exc", None, "tb")
    msg = messages.TaskErred(1.5, "s", "w", "k", error, 1.0, 2.0, 7)
    assert msgpack.unpackb(dumps([msg]), use_list=False) == (
        ("TaskErred", 1.5, "s", "w", "k", ("ValueError", "bad", b"exc", None, "tb"), 1.0, 2.0, 7),
    )
    # a record on its own (not in a field) names its class like a message
    assert msgpack.unpackb(dumps(error), use_list=False) == ("TaskError", "ValueError", "bad", b"exc", None, "tb")


def test_plain_values_and_empty_batches_round_trip():
    for value in [(), 5, "text", None, {"a": (1, 2)}, 1.5, b"raw"]:
        assert_identical(loads(dumps(value)), value)
    assert loads(dumps([])) == ()


@pytest.mark.parametrize(
    "op",
    ["NoSuchOp", "", "addclient", "Message", b"AddClient", 42, None, 1.5, True, ("AddClient",)],
)
def test_decoding_an_unknown_op_raises_value_error(op):
    if isinstance(op, str):  # an array starting with anything else is read as a batch
        with pytest.raises(ValueError, match="unknown message op"):
            loads(_record([op, 0.0, "s", "c"]))
    with pytest.raises(ValueError, match="unknown message op"):
        loads(_record([[op, 0.0, "s", "c"]]))
    # also beside a valid message in a batch
    good = dumps(messages.AddClient(0.0, "s", "c"))
    with pytest.raises(ValueError, match="unknown message op"):
        loads(b"\x92" + good + _record([op, 0.0, "s", "c"]))


def test_decoding_an_unhashable_op_raises_value_error():
    with pytest.raises(ValueError, match="unknown message op"):
        loads(_record([[{"op": "AddClient"}, 0.0, "s", "c"]]))


def test_decoding_an_empty_message_array_raises_value_error():
    with pytest.raises(ValueError, match="an empty array"):
        loads(_record([[]]))
    with pytest.raises(ValueError, match="an empty array"):
        loads(_record([["AddClient", 0.0, "s", "c"], []]))


@pytest.mark.parametrize("fields", [[], [0.0], [0.0, "s"], [0.0, "s", "c", "extra"], [0.0, "s", "c", None, None]])
def test_decoding_a_wrong_field_count_raises_value_error(fields):
    with pytest.raises(ValueError, match="AddClient takes 3 fields, got"):
        loads(_record(["AddClient", *fields]))
    with pytest.raises(ValueError, match="AddClient takes 3 fields, got"):
        loads(_record([["AddClient", 0.0, "s", "c"], ["AddClient", *fields]]))


_SPEC = ["k", None, (), 0, None, False, None, 0, False]
_ERROR = ["E", "m", None, None, ""]


@pytest.mark.parametrize(
    "record",
    [
        ["TaskErred", 0.0, "s", "w", "k", "not a record", 0.0, 0.0, -1],
        ["TaskErred", 0.0, "s", "w", "k", None, 0.0, 0.0, -1],
        ["TaskErred", 0.0, "s", "w", "k", _ERROR[:-1], 0.0, 0.0, -1],
        ["TaskErred", 0.0, "s", "w", "k", [*_ERROR, "extra"], 0.0, 0.0, -1],
        ["TaskErred", 0.0, "s", "w", "k", ["TaskError", *_ERROR], 0.0, 0.0, -1],
        ["TaskErred", 0.0, "s", "w", "k", {"typename": "E"}, 0.0, 0.0, -1],
        ["UpdateGraph", 0.0, "s", "c", "k", []],
        ["UpdateGraph", 0.0, "s", "c", None, []],
        ["UpdateGraph", 0.0, "s", "c", _SPEC, []],  # one spec, not an array of them
        ["UpdateGraph", 0.0, "s", "c", [_SPEC, "k"], []],
        ["UpdateGraph", 0.0, "s", "c", [_SPEC, _SPEC[:-1]], []],
        ["UpdateGraph", 0.0, "s", "c", [["TaskSpec", *_SPEC]], []],
        ["UpdateGraph", 0.0, "s", "c", [b"k" * 9], []],  # 9 bytes are not 9 fields
        ["UpdateData", 0.0, "s", "c", [["k", 1, "int"]]],
    ],
    ids=lambda r: f"{r[0]}-{r[5] if r[0] == 'TaskErred' else r[4]!r}"[:40],
)
def test_decoding_a_malformed_record_field_raises_value_error(record):
    with pytest.raises(ValueError, match="malformed"):
        loads(_record(record))
    with pytest.raises(ValueError, match="malformed"):
        loads(_record([record]))


def test_well_formed_record_fields_decode_into_their_classes():
    graph = loads(_record(["UpdateGraph", 0.0, "s", "c", [_SPEC, _SPEC], ["k"]]))
    assert graph.tasks == (TaskSpec("k", None), TaskSpec("k", None))
    erred = loads(_record(["TaskErred", 0.0, "s", "w", "k", _ERROR, 0.0, 0.0, -1]))
    assert erred.error == TaskError("E", "m")


@pytest.mark.parametrize("code", [0, 2, 7, 127])
def test_decoding_an_unknown_ext_code_raises_value_error(code):
    with pytest.raises(ValueError, match="unknown msgpack extension type"):
        loads(_record(msgpack.ExtType(code, _record(["AddClient", 0.0, "s", "c"]))))


@pytest.mark.parametrize("code", [-2, -100, -128])
def test_decoding_a_reserved_negative_ext_code_raises_value_error(code):
    # fixext 1 (0xd4), the type byte, one data byte; msgpack-python will not pack these
    with pytest.raises(ValueError, match="unknown msgpack extension type"):
        loads(bytes([0xD4, code & 0xFF, 0]))


def test_decoding_the_timestamp_ext_code_raises_value_error():
    # fixext 4 (0xd6), type -1, 32-bit seconds = 1: a valid msgpack timestamp, not a twofold record
    with pytest.raises(ValueError):
        loads(bytes([0xD6, 0xFF, 0, 0, 0, 1]))


def test_an_ext_record_is_refused():
    # protocol 1 wrapped each message in an ExtType(1); protocol 2 peers refuse it
    with pytest.raises(ValueError, match="unknown msgpack extension type 1"):
        loads(_record([msgpack.ExtType(1, _record(["AddClient", 0.0, "s", "c"]))]))


def _forget(name: str) -> None:
    """Undo a test's registration of the class ``name`` (registry and wire plans)."""
    cls = REGISTRY.pop(name, None)
    messages._DECODE.pop(name, None)
    messages._ENCODE.pop(cls, None)
    messages._NESTED.pop(cls, None)


def test_an_optional_record_field_round_trips():
    try:

        @messages.message
        class _OptionalProbe(Message):
            error: TaskError | None = None
            specs: tuple[TaskSpec, ...] = ()

        for msg in [_OptionalProbe(0.0, "s"), _OptionalProbe(0.0, "s", TaskError("E", "m"), (TaskSpec("k", None),))]:
            assert_identical(loads(dumps(msg)), msg)
        flat = msgpack.unpackb(dumps(_OptionalProbe(0.0, "s")), use_list=False)
        assert flat == ("_OptionalProbe", 0.0, "s", None, ())
        with pytest.raises(ValueError, match="malformed TaskError"):
            loads(_record(["_OptionalProbe", 0.0, "s", "E", []]))
    finally:
        _forget("_OptionalProbe")


def test_a_class_registered_again_under_its_op_replaces_the_old_one_on_the_wire():
    def define():
        @messages.message
        class _ReProbe(Message):
            n: int

        return _ReProbe

    try:
        old, new = define(), define()
        assert type(loads(dumps(new(0.0, "s", 1)))) is new
        with pytest.raises(TypeError):
            dumps(old(0.0, "s", 1))
    finally:
        _forget("_ReProbe")


def test_a_record_in_an_unplannable_annotation_is_refused_at_registration():
    with pytest.raises(TypeError, match="a record can only be a field as"):

        @messages.message
        class _DictOfRecordsProbe(Message):
            specs: dict[str, TaskSpec]

    assert "_DictOfRecordsProbe" not in REGISTRY
    assert "_DictOfRecordsProbe" not in messages._DECODE


# --------------------------------------------------------------------------
# Malformed input: decoding what an untrusted peer may send
# --------------------------------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=INT_MIN, max_value=INT_MAX), st.floats(),
    st.text(max_size=8), st.binary(max_size=8), st.sampled_from(sorted(REGISTRY)),
)  # fmt: skip
_structures = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=10) | st.dictionaries(_scalars.filter(lambda k: k == k), inner, max_size=3),
    max_leaves=30,
)


def assert_well_formed(obj: object, path: str = "result") -> None:
    """Every registered instance in a decoded value has every record field holding its record class."""
    cls = type(obj)
    if REGISTRY.get(cls.__name__) is cls:
        types_ = field_types(cls)
        for f in dataclasses.fields(cls):
            value, tp = getattr(obj, f.name), types_[f.name]
            where = f"{path}.{f.name}"
            if tp in NESTED_RECORDS:
                assert type(value) is tp, f"{where} is a {type(value).__name__}"
            elif typing.get_origin(tp) is tuple and typing.get_args(tp)[0] in NESTED_RECORDS:
                assert type(value) is tuple, f"{where} is a {type(value).__name__}"
                assert all(type(v) is typing.get_args(tp)[0] for v in value), where
            assert_well_formed(value, where)
    elif isinstance(obj, tuple):
        for i, item in enumerate(obj):
            assert_well_formed(item, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            assert_well_formed(v, f"{path}[{k!r}]")


def _has_ext(value: object) -> bool:
    if isinstance(value, msgpack.ExtType):
        return True
    if isinstance(value, tuple):
        return any(_has_ext(v) for v in value)
    if isinstance(value, dict):
        return any(_has_ext(k) or _has_ext(v) for k, v in value.items())
    return False


def check_untrusted(data: bytes) -> None:
    """What a peer's bytes may do: decode to well-formed messages, or raise an Exception."""
    from twofold.runtime.framing import FrameError, decode_batch

    try:
        result = loads(data)
    except Exception:
        pass
    else:
        assert_well_formed(result)
        if isinstance(result, Message) or (
            type(result) is tuple and all(REGISTRY.get(type(m).__name__) is type(m) for m in result)
        ):
            # what was accepted is exactly what was sent: nothing dropped, added or reshaped
            plain = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=False)
            assert not _has_ext(plain)  # extension types are refused
            assert dumps(result) == msgpack.packb(plain, use_bin_type=True)
    try:
        batch = decode_batch(data)
    except FrameError:
        return
    assert type(batch) is tuple
    assert all(isinstance(m, Message) for m in batch)
    assert_well_formed(batch, "batch")


@_FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_decode_to_messages_or_raise(data):
    check_untrusted(data)


@_FUZZ
@given(structure=_structures)
def test_random_msgpack_structures_decode_to_messages_or_raise(structure):
    check_untrusted(msgpack.packb(structure, use_bin_type=True))
    check_untrusted(msgpack.packb([structure], use_bin_type=True))


_CLASS_STRATEGIES: dict[type, st.SearchStrategy] = {}
#: the classes with a field that holds records (drawn more often: their decoding has more to get wrong)
_WITH_RECORDS = [
    cls
    for cls in ALL_CLASSES
    if any(r.__name__ in str(tp) for tp in field_types(cls).values() for r in NESTED_RECORDS)
]


@st.composite
def mutated_records(draw) -> object:
    """A valid message's array with one part replaced, dropped or added: nearly valid input."""
    cls = draw(st.sampled_from(ALL_CLASSES) | st.sampled_from(_WITH_RECORDS))
    if cls not in _CLASS_STRATEGIES:
        _CLASS_STRATEGIES[cls] = strategy_for_class(cls)
    msg = draw(_CLASS_STRATEGIES[cls])
    record = list(msgpack.unpackb(dumps(msg), use_list=True))
    # pick a node (the record itself or any array inside it) and change it
    arrays = [record]
    for node in arrays:
        arrays.extend(v for v in node if isinstance(v, list))
    node = draw(st.sampled_from(arrays))
    how = draw(st.sampled_from(["replace", "drop", "add", "keep"] if node else ["add", "keep"]))
    if how == "keep":
        pass
    elif how == "add":
        node.insert(draw(st.integers(0, len(node))), draw(_structures))
    else:
        i = draw(st.integers(0, len(node) - 1))
        if how == "drop":
            del node[i]
        else:
            node[i] = draw(_structures)
    return record


@settings(_FUZZ, max_examples=150)
@given(record=mutated_records())
def test_nearly_valid_messages_decode_to_messages_or_raise(record):
    check_untrusted(msgpack.packb(record, use_bin_type=True))
    check_untrusted(msgpack.packb([record], use_bin_type=True))


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
