"""A prompt's tokens on a page, Neuroscope-style: each token's background coloured by its
activation, the peak token outlined, and the legend of the colour scale. Used by a run's report,
a neuron's dataset examples page and a sweep's index page.

Everything shown comes from a prompt or a token, written by an LLM or taken from real text, so it
is escaped.
"""

from __future__ import annotations

import math

from neuron_search.services.reports.page_style import escape as _e
from neuron_search.services.reports.page_style import fmt as _fmt
from neuron_search.services.storage.record_store import StoredRecord

# Token highlight colours (Neuroscope-like): white -> orange for positive, white -> blue for negative.
POSITIVE_RGB = (234, 88, 12)
NEGATIVE_RGB = (37, 99, 235)


def token_label(token: str) -> str:
    """A token as shown inline: escaped, spaces visible, newlines as ↵."""
    return f'<code class="tokname">{_e(_visible(token))}</code>'


def _visible(token: str) -> str:
    return token.replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵")


def token_spans(record: StoredRecord, scale: float) -> str:
    tokens, values = record["tokens"], record["values"]
    if not tokens:
        return f'<span class="plain">{_e(record["prompt"])}</span>'
    peak = _peak_index(tokens, values, record["token"])
    spans = []
    values = list(values) + [math.nan] * (len(tokens) - len(values))  # never drop a token from view
    for i, (token, value) in enumerate(zip(tokens, values)):
        cls = "tok peak" if i == peak else "tok"
        spans.append(
            f'<span class="{cls}" style="background:{_token_colour(value, scale)}" '
            f'title="{_e(repr(token))}: {_e(_fmt(value))}">{_e(_visible(token))}</span>'
        )
    return "".join(spans)


def _peak_index(tokens: list[str], values: list[float], peak_token: str) -> int:
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return -1
    # Prefer the store's peak token (it may differ from the argmax only on ties or odd values).
    matching = [(v, i) for v, i in finite if tokens[i] == peak_token] or finite
    return max(matching, key=lambda vi: (vi[0], -vi[1]))[1]


def _token_colour(value: float, scale: float) -> str:
    if not math.isfinite(value) or value == 0:
        return "transparent"
    alpha = min(abs(value) / scale, 1.0)
    r, g, b = POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    return f"rgba({r},{g},{b},{alpha:.3f})"


def scale_legend(scale: float, basis: str = "the run's largest |value|") -> str:
    neg = "rgb({},{},{})".format(*NEGATIVE_RGB)
    pos = "rgb({},{},{})".format(*POSITIVE_RGB)
    return (
        f'<div class="scale"><span>Token colour: activation relative to {_e(basis)}</span>'
        f'<span class="mono">−{_fmt(scale, 2)}</span>'
        f'<span class="bar" style="background:linear-gradient(90deg,{neg},#fff,{pos})"></span>'
        f'<span class="mono">+{_fmt(scale, 2)}</span>'
        '<span class="peak-demo tok peak">peak</span><span>= peak token · hover a token for its value</span></div>'
    )


# ---- attribution: the second row of colour under a prompt's tokens ----------------------------------
# Diverging, apart from the activation's orange: red where the token helps the neuron fire (taking
# it away lowers the activation at the peak), blue where it holds it back.
HELPS_RGB = (220, 38, 38)
HURTS_RGB = (37, 99, 235)
_COLUMN = "display:inline-flex;flex-direction:column;vertical-align:top;margin-bottom:4px"
_STRIP = "display:block;height:9px;margin-top:2px;border-radius:2px"


def effect_colour(effect: float | None, scale: float) -> str:
    """An attribution effect's colour: red for helps (> 0), blue for hurts (< 0), transparent for none."""
    if effect is None or not math.isfinite(effect) or effect == 0:
        return "transparent"
    alpha = min(abs(effect) / scale, 1.0) if scale > 0 else 1.0
    r, g, b = HELPS_RGB if effect > 0 else HURTS_RGB
    return f"rgba({r},{g},{b},{alpha:.3f})"


def attribution_spans(
    tokens: list[str],
    values: list[float],
    peak: int,
    removal: list[float | None],
    replacement: list[float | None],
    replacement_token: str,
    value_scale: float,
    effect_scale: float,
) -> str:
    """A prompt's tokens in two rows of colour, column by column: the activation at each token (as
    `token_spans` colours it, the peak outlined) and under it each token's effect on the activation
    at the peak by removal (`effect_colour`); each column's tooltip gives both numbers and the
    replacement's. Everything shown is escaped."""
    columns = []
    for i, token in enumerate(tokens):
        value = values[i] if i < len(values) else math.nan
        effect = removal[i] if i < len(removal) else None
        swapped = replacement[i] if i < len(replacement) else None
        if i < peak and effect is not None:
            tip = f"{token!r}: activation {_fmt(value)}; without it the peak's activation changes by {_signed(-effect)} (effect {_signed(effect)})"
            if swapped is not None:
                tip += f"; replacing it with {replacement_token!r}: effect {_signed(swapped)}"
        elif i == peak:
            tip = f"{token!r}: the peak, activation {_fmt(value)}"
        else:
            tip = f"{token!r}: activation {_fmt(value)}; after the peak: no effect on it (causal attention)"
        cls = "tok peak" if i == peak else "tok"
        columns.append(
            f'<span class="attr-col" style="{_COLUMN}" title="{_e(tip)}">'
            f'<span class="{cls}" style="background:{_token_colour(value, value_scale)}">{_e(_visible(token))}</span>'
            f'<span class="attr-effect" style="{_STRIP};background:{effect_colour(effect, effect_scale)}"></span></span>'
        )
    return "".join(columns)


def attribution_legend(scale: float) -> str:
    hurts = "rgb({},{},{})".format(*HURTS_RGB)
    helps = "rgb({},{},{})".format(*HELPS_RGB)
    return (
        '<div class="scale"><span>Second row: the token\'s effect on the activation at the peak (removed)</span>'
        f'<span class="mono">−{_fmt(scale, 2)} hurts</span>'
        f'<span class="bar" style="background:linear-gradient(90deg,{hurts},#fff,{helps})"></span>'
        f'<span class="mono">+{_fmt(scale, 2)} helps</span><span>· hover a token for its numbers</span></div>'
    )


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "−") + _fmt(abs(value))
