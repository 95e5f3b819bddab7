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
