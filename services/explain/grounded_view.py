"""What the grounded explainer sees (issue 35, item 5), and what is held out to score it.

The explainer of examples.py saw the run's ten best findings, which were often one prompt in ten
costumes, and a sample across activations that could be built-in seed prompts. Here it sees:

- one prompt per **theme** (services/search/themes.py: near-copies of one prompt are one theme), the
  best of each of the top `n_themes`, with how many variants it stands for and their range;
- a sample across the weaker activations (one per equal-count bin, as before) of what is left after
  every member of those themes is set aside, **never a seed** (source "seed": the built-in seed
  prompts and a --seed-corpus run's real snippets, which reach the explainer as real snippets): a seed
  reaches the explainer only as the best of a top theme, that is, when it is genuinely among the top;
- the neuron's diverse **top real snippets**: the top real snippets are grouped into themes and dealt
  out, theme by theme, to the explainer (themes 1, 3, 5, ...) and to the held-out set (themes 2, 4,
  ...), so what it reads is never what it is scored on and the two halves are alike;
- the **peak-token table** over what it was shown (the theme bests and the shown real snippets), which
  is also the lookup of the token baseline (services/explain/token_baseline.py), so the baseline
  knows exactly what the explainer knew; and the logit effects (the run's evidence.json).

Held out: the run's prompts as in examples.py (the upper half's best, a random draw from the lower
half), none of them a member of a shown theme; real text: the other themes' snippets against ordinary
snippets (at or below the neuron's median over the corpus).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from neuron_search.services.evidence.peak_tokens import PeakTable, peak_table
from neuron_search.services.explain.examples import _distinct, _quantile_sample, held_out
from neuron_search.services.search.themes import Theme, group_themes, near_copies
from neuron_search.services.storage.record_store import StoredRecord

N_THEMES = 10  # top themes shown, one prompt each
N_SAMPLE = 10  # weaker records shown, one per activation bin
N_REAL = 5  # top real snippets shown (at most; one per theme)
N_HOLDOUT = 20  # held-out high and low run prompts (each, at most)
ALL_ROWS = 1_000_000  # the baseline's lookup keeps every row of the table


@dataclass
class ExplainerView:
    themes: list[Theme]  # the top themes of the run's records, best first
    sampled: list[StoredRecord]  # weaker records across the activations, no seed
    real_shown: list[dict[str, Any]]  # measured top real snippets the explainer reads
    high: list[StoredRecord]  # held-out run prompts
    low: list[StoredRecord]
    real_high: list[dict[str, Any]] = field(default_factory=list)  # held-out real text (measured where possible)
    real_low: list[dict[str, Any]] = field(default_factory=list)
    table: PeakTable | None = None  # peak tokens over the theme bests and the shown real snippets

    @property
    def shown(self) -> list[dict[str, Any]]:
        """Every example the explainer reads, in the order it reads them."""
        return [t["best"] for t in self.themes] + list(self.sampled) + list(self.real_shown)


def build_view(
    records: Sequence[StoredRecord],
    real_high: Sequence[Mapping[str, Any]] = (),
    real_low: Sequence[Mapping[str, Any]] = (),
    n_themes: int = N_THEMES,
    n_sample: int = N_SAMPLE,
    n_real: int = N_REAL,
    n_holdout: int = N_HOLDOUT,
    seed: int = 0,
) -> ExplainerView:
    """The explainer's view of a run (see the module docstring). `real_high` are the neuron's top
    real snippets, best first, and `real_low` ordinary ones, each a measured record (`prompt`,
    `activation`, `tokens`, `values`, `peak`, `token`) or, where they could not be measured, {"prompt"}
    alone (then none is shown, and all are held out, as before)."""
    rng = random.Random(seed)
    ranked = _distinct(records)
    themes = group_themes(ranked, limit=n_themes)
    rest = [r for r in ranked if not any(near_copies(t["best"], r) for t in themes)]
    sampled = _quantile_sample([r for r in rest if r["source"] != "seed"], n_sample, rng)
    high, low = held_out(rest, sampled, n_holdout, rng)

    run_shown = {r["prompt"] for r in [t["best"] for t in themes] + sampled}
    real_shown, held_real = _deal_real([dict(r) for r in real_high], n_real, deal=bool(real_low))
    seen = run_shown | {r["prompt"] for r in real_shown}
    view = ExplainerView(
        themes=themes, sampled=sampled, real_shown=real_shown, high=high, low=low,
        real_high=[r for r in held_real if r["prompt"] not in seen],
        real_low=[dict(r) for r in real_low if r["prompt"] not in seen],
    )  # fmt: skip
    view.table = peak_table(
        [t["best"] for t in themes] + real_shown,
        f"what the explainer was shown: {len(themes)} top themes and {len(real_shown)} real snippets",
        rows=ALL_ROWS,
    )
    return view


def _deal_real(ranked: list[dict[str, Any]], n_real: int, deal: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(shown, held out): the snippets' themes dealt alternately, the first to the explainer, which
    reads each of its themes' best (at most `n_real`); every member of the other themes is held out.
    Without `deal` (no ordinary snippets to score against, so nothing is held out) the explainer reads
    the best of the first `n_real` themes. Snippets that were not measured (no tokens) cannot be
    grouped or shown: all are held out."""
    if n_real <= 0 or not ranked or not all(r.get("tokens") for r in ranked):
        return [], ranked
    ranked = sorted(ranked, key=lambda r: -r["activation"])
    themes = group_themes(ranked)
    shown_themes = [t for i, t in enumerate(themes) if i % 2 == 0 or not deal][:n_real]
    shown = [t["best"] for t in shown_themes]
    held = [r for r in ranked if not any(near_copies(t["best"], r) for t in shown_themes)]
    return shown, held
