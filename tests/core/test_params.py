"""The preamble helper: is-None filling, declared checks, one-sentence errors, unknown names."""
import pytest
import repro
from repro.core.params import ParameterError, check_positive

PROFILE = {"quick": dict(width=32, lrs=[0.1, 0.2], act="relu"), "full": dict(width=512, lrs=[0.1, 0.2, 0.4], act="relu")}
KNOBS = dict(width=repro.integer(ge=0), lrs=repro.list_of(repro.number(gt=0), min_len=2),
             act=repro.choice("relu", "tanh"), verbose=repro.flag(), limit=repro.optional(repro.integer(ge=1)))


def namespace(**over):
    ns = dict(profile="quick", seed=0, width=None, lrs=None, act=None, verbose=False, limit=None)
    ns.update(over)
    return ns


def test_fills_only_what_is_none_and_returns_the_profile():
    ns = namespace()
    assert repro.fill_parameters(ns, PROFILE, KNOBS) == "quick"
    assert ns["width"] == 32 and ns["lrs"] == [0.1, 0.2] and ns["act"] == "relu" and ns["limit"] is None
    ns = namespace(profile="full", width=0, lrs=(0.3, 0.5))  # 0 is a value, not "unset"; a tuple becomes a list
    assert repro.fill_parameters(ns, PROFILE, KNOBS) == "full"
    assert ns["width"] == 0 and ns["lrs"] == [0.3, 0.5] and ns["verbose"] is False


@pytest.mark.parametrize("name,value,message", [
    ("width", -1, "width must be an integer >= 0; got -1."),
    ("width", 2.5, "width must be an integer >= 0; got 2.5."),
    ("width", True, "width must be an integer >= 0; got True."),
    ("lrs", [0.1], "lrs must be a list of at least 2 numbers > 0; got [0.1]."),
    ("lrs", [0.1, -1], "lrs must be a list of at least 2 numbers > 0; got [0.1, -1]."),
    ("act", "gelu", "act must be one of 'relu', 'tanh'; got 'gelu'."),
    ("verbose", 1, "verbose must be one of True, False; got 1."),
    ("limit", 0, "limit must be None or an integer >= 1; got 0."),
    ("seed", -3, "seed must be an integer >= 0; got -3."),
    ("profile", "fast", "profile must be one of 'auto', 'quick', 'full'; got 'fast'."),
])
def test_bad_values_are_one_sentence(name, value, message):
    with pytest.raises(ParameterError) as e:
        repro.fill_parameters(namespace(**{name: value}), PROFILE, KNOBS)
    assert e.value.message == message and "\n" not in message


def test_unknown_knob_in_a_profile_table():
    bad = {"quick": dict(width=1, lr=0.1), "full": dict(width=1, lr=0.1)}
    with pytest.raises(ParameterError, match="the quick profile sets 'lr', which is not a declared knob"):
        repro.fill_parameters(namespace(), bad, KNOBS)


def test_profiles_must_set_the_same_knobs():
    bad = {"quick": dict(width=1), "full": dict()}
    with pytest.raises(ParameterError, match="only one of them sets width"):
        repro.fill_parameters(namespace(), bad, KNOBS)


def test_a_declared_knob_missing_from_the_parameters_cell():
    ns = namespace()
    del ns["verbose"]
    with pytest.raises(ParameterError, match="'verbose' is declared but the parameters cell does not set it"):
        repro.fill_parameters(ns, PROFILE, KNOBS)


def test_an_undeclared_papermill_parameter_is_an_error():
    # papermill injects a cell that starts with "# Parameters"; the kernel keeps it in its input history In
    ns = namespace(widht=3, In=["", "profile = 'auto'", "# Parameters\nwidht = 3\n", "import repro"])
    with pytest.raises(ParameterError) as e:
        repro.fill_parameters(ns, PROFILE, KNOBS)
    assert e.value.message.startswith("'widht' is not a parameter of this chapter; its parameters are: profile, seed,")


def test_declarations_must_be_declarations():
    with pytest.raises(TypeError, match="the declaration of 'width'"):
        repro.fill_parameters(namespace(), PROFILE, {**KNOBS, "width": int})


@pytest.mark.parametrize("bad", [-1, 0, 1.5, "8", True])
def test_check_positive_integer_rejects(bad):
    with pytest.raises(ParameterError, match="width must be an integer > 0"):
        check_positive("width", bad, integer=True)
