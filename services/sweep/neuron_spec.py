"""`--neurons SPEC`: which neurons of the layer a sweep searches."""

from __future__ import annotations

from neuron_search.services.errors import UserError

HELP = "START:STOP[:STEP] (0:2048, 0:2048:8), a comma-separated list (12,840,1001), or all"


def parse_neurons(spec: str, d_mlp: int | None = None) -> list[int]:
    """The neurons SPEC names, in order and without repeats; with `d_mlp`, each checked to exist."""
    text = spec.strip().replace(" ", "")
    try:
        if text == "all":
            if d_mlp is None:
                raise ValueError
            neurons = list(range(d_mlp))
        elif ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] < 1):
                raise ValueError
            neurons = list(range(*parts))
        else:
            neurons = [int(p) for p in text.split(",") if p]
    except ValueError:
        raise UserError(f"--neurons takes {HELP}; {spec!r} is none of these.") from None
    neurons = list(dict.fromkeys(neurons))
    if not neurons:
        raise UserError(f"--neurons {spec!r} names no neuron; it takes {HELP}.")
    if min(neurons) < 0 or (d_mlp is not None and max(neurons) >= d_mlp):
        limit = f" (this layer has {d_mlp}: 0 to {d_mlp - 1})" if d_mlp is not None else ""
        raise UserError(f"--neurons {spec!r} names neurons outside the layer{limit}.")
    return neurons
