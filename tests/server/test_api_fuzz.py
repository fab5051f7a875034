"""Fuzzed API arguments: every refusal is a clear VelocityError, never a raw traceback."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity import VelocityServer
from velocity.errors import VelocityError

_hostile = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 10**12), max_size=3),
)
_counter = itertools.count()


def _kwargs(draw: st.DrawFn) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    for name, good in (
        ("num_clients", st.integers(1, 12)),
        ("seed", st.integers(0, 5)),
        ("client_fraction", st.floats(0.1, 1.0)),
        ("layer_shapes", st.just({"w": 4, "b": 2})),
        ("alpha", st.floats(0.1, 2.0)),
        ("partitioning", st.sampled_from(["iid", "dirichlet"])),
        ("backend", st.sampled_from(["sequential", "loopback", "out_of_order"])),
    ):
        kwargs[name] = draw(st.one_of(good, _hostile) if draw(st.booleans()) else good)
    return kwargs


@st.composite
def _calls(draw: st.DrawFn) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    server = _kwargs(draw)
    attack = {
        "attack_type": draw(
            st.one_of(
                st.sampled_from(["sybil_nodes", "model_poisoning", "little", "nope"]), _hostile
            )
        ),
        "intensity": draw(st.one_of(st.floats(0.0, 5.0), _hostile)),
        "count": draw(st.one_of(st.integers(1, 3), _hostile)),
        "fraction": draw(st.one_of(st.floats(0.1, 0.5), _hostile)),
    }
    run = {
        "min_clients": draw(st.one_of(st.integers(1, 3), _hostile)),
        "rounds": draw(st.one_of(st.integers(0, 2), _hostile)),
    }
    return server, attack, run


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=_calls())
def test_fuzzed_server_calls_raise_only_velocity_errors(
    call: tuple[dict[str, object], dict[str, object], dict[str, object]],
) -> None:
    server_kwargs, attack, run = call
    error: BaseException | None = None
    try:
        server = VelocityServer(
            "toy", "none", "FedAvg", f"memory://fuzz-{next(_counter)}", **server_kwargs
        )  # type: ignore[arg-type]
        server.simulate_attack(**attack)  # type: ignore[arg-type]
        server.run(**run)  # type: ignore[arg-type]
    except Exception as exc:  # the assertion below is on its type
        error = exc
    assert error is None or isinstance(error, VelocityError), repr(error)
    assert error is None or 0 < len(str(error)) < 5000
