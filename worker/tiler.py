"""The exact tiler: split a phrase into whole LEGO target texts, fewest tiles first (GATE, rule 1).

Greedy longest-match rejects phrases that do tile ("quiero que" + "hablar" when a longer LEGO
"quiero que hablar..." exists), so the tiler is a dynamic programme over token positions with
two layers: tilings that already contain the operative LEGO and tilings that do not yet.

>>> t = Tiler([(1, "Quiero"), (2, "hablar"), (3, "español"), (4, "de el libro")], "spa")
>>> [tile.text for tile in t.tile("¿Quiero hablar del libro?", operative=4).tiles]
['quiero', 'hablar', 'de el libro']
>>> t.tile("Quiero hablar inglés", operative=2).reason
"unknown word 'inglés'"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from worker.languages import LANGUAGES, find_language
from worker.text import PUNCTUATION, Token, normalise_key, normalise_phrase, tokenize

__all__ = ["CONTRACTIONS", "PUNCTUATION", "Tile", "Tiler", "Tiling", "count_words", "normalise_key", "normalise_phrase"]

#: Contractions that must not cause false rejects, per target language (keep this table small).
CONTRACTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "spa": {"del": ("de", "el"), "al": ("a", "el")},
    "por": {"do": ("de", "o"), "da": ("de", "a"), "no": ("em", "o"), "na": ("em", "a"), "ao": ("a", "o")},
    "fra": {"du": ("de", "le"), "au": ("à", "le"), "aux": ("à", "les")},
    "ita": {"del": ("di", "il"), "al": ("a", "il"), "nel": ("in", "il")},
}

#: Scripts written without spaces: tiles meet directly, and phrase length counts known words.
UNSPACED_LANGUAGES = frozenset(code for code, entry in LANGUAGES.items() if not entry.spaced)


def count_words(text: str) -> int:
    return len(normalise_phrase(text).split())


@dataclass(frozen=True)
class Tile:
    """One tile of a tiling: token span ``[start, end)``, its normalised text and the positions
    of every LEGO with that text that may be used at this point."""

    start: int
    end: int
    text: str
    positions: tuple[int, ...]
    operative: bool


@dataclass(frozen=True)
class Tiling:
    """The result of :meth:`Tiler.tile`: ``tiles`` when the phrase passes, else a ``reason``."""

    tiles: tuple[Tile, ...] = ()
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class Tiler:
    """Tiles phrases with the target texts of positioned LEGOs.

    ``entries`` are ``(position, target_text)`` pairs; positions are the canonical 1-based
    positions. Build one per course and share it: it is read-only after construction.
    """

    def __init__(self, entries: Iterable[tuple[int, str]], language: str | None = None) -> None:
        entry = find_language(language or "")
        self.language = entry.code if entry else (language or "")
        self.spaced = entry.spaced if entry else True
        self.contractions = CONTRACTIONS.get(self.language, {})
        index: dict[tuple[str, ...] | str, list[int]] = {}
        for position, text in entries:
            key = self.key(text)
            if key:
                index.setdefault(key, []).append(position)
        self._index: dict[Sequence[str], tuple[int, ...]] = {key: tuple(sorted(set(p))) for key, p in index.items()}
        self._max_len = max((len(k) for k in self._index), default=1)
        self._vocabulary = {tok for key in self._index for tok in (key if self.spaced else [key])}

    # -- text to tokens --------------------------------------------------------------------------

    def tokens(self, text: str) -> list[str] | str:
        """Spaced scripts: words with contractions expanded; unspaced: the characters."""
        return self.texts(tokenize(text, self.spaced, self.contractions))

    def texts(self, tokens: Sequence[Token]) -> list[str] | str:
        """The tiler's tokens of :func:`worker.text.tokenize`'s (for text tokenized already)."""
        found = [token.text for token in tokens]
        return found if self.spaced else "".join(found)

    def key(self, text: str) -> tuple[str, ...] | str:
        tokens = self.tokens(text)
        return tuple(tokens) if isinstance(tokens, list) else tokens

    def positions_of(self, text: str) -> tuple[int, ...]:
        """Positions of every LEGO whose target text is ``text`` (after normalisation)."""
        return self._index.get(self.key(text), ())

    # -- tiling ----------------------------------------------------------------------------------

    def tile(
        self, phrase: str, operative: int, limit: int | None = None, tokens: list[str] | str | None = None
    ) -> Tiling:
        """Tile ``phrase`` with LEGOs at positions ``< limit`` (default: ``operative``) plus the
        operative LEGO itself; the tiling must contain the operative LEGO. ``tokens``: the
        phrase's :meth:`tokens`, when the caller has them already."""
        limit = operative if limit is None else limit
        tokens = self.tokens(phrase) if tokens is None else tokens
        if not tokens:
            return Tiling(reason="empty phrase")
        found = self._solve(tokens, operative, limit)
        if found is not None:
            return Tiling(tiles=found)
        return Tiling(reason=self._why_not(tokens, operative, limit))

    def segment(self, phrase: str) -> tuple[Tile, ...] | None:
        """The fewest-tile tiling of ``phrase`` with LEGOs of any position (no GATE), or None:
        how a seed sentence whose own LEGOs do not join to it splits into the course's LEGOs."""
        tokens = self.tokens(phrase)
        if not tokens:
            return None
        return self._solve(tokens, operative=0, limit=10**9, require_operative=False)

    def _solve(
        self,
        tokens: Sequence[str],
        operative: int,
        limit: int,
        require_operative: bool = True,
        future_cost: int | None = None,
    ) -> tuple[Tile, ...] | None:
        """Fewest-tile tiling. With ``future_cost``, LEGOs at positions >= ``limit`` may be used
        at that cost per tile (to explain a failure); without it they may not."""
        n = len(tokens)
        inf = 10**12
        # best[layer][i]: cheapest cover of tokens[:i]; layer 1 = the operative is among its tiles.
        best = [[inf] * (n + 1), [inf] * (n + 1)]
        back: list[list[tuple[int, int, bool] | None]] = [[None] * (n + 1), [None] * (n + 1)]
        best[0][0] = 0
        for i in range(1, n + 1):
            for j in range(max(0, i - self._max_len), i):
                piece = tuple(tokens[j:i]) if self.spaced else tokens[j:i]
                positions = self._index.get(piece)
                if positions is None:
                    continue
                step = 1 if positions[0] < limit else future_cost
                is_operative = operative in positions
                for layer in (0, 1):
                    if best[layer][j] >= inf:
                        continue
                    if step is not None and best[layer][j] + step < best[layer][i]:
                        best[layer][i], back[layer][i] = best[layer][j] + step, (j, layer, False)
                    if is_operative and best[layer][j] + 1 < best[1][i]:
                        best[1][i], back[1][i] = best[layer][j] + 1, (j, layer, True)
        layer = 1 if require_operative or best[1][n] <= best[0][n] else 0
        if best[layer][n] >= inf:
            return None
        tiles: list[Tile] = []
        i = n
        while i > 0:
            j, previous_layer, as_operative = back[layer][i]  # type: ignore[misc]
            piece = tuple(tokens[j:i]) if self.spaced else tokens[j:i]
            allowed = tuple(p for p in self._index[piece] if p < limit or p == operative)
            text = " ".join(piece) if self.spaced else str(piece)
            tiles.append(Tile(j, i, text, allowed or self._index[piece], as_operative))
            i, layer = j, previous_layer
        tiles.reverse()
        return tuple(tiles)

    def _why_not(self, tokens: Sequence[str], operative: int, limit: int) -> str:
        """Why a phrase fails GATE, in words a model can act on in a repair round."""
        if self.spaced:
            unknown = list(dict.fromkeys(tok for tok in tokens if tok not in self._vocabulary))
            if unknown:
                return "unknown word" + ("s " if len(unknown) > 1 else " ") + ", ".join(map(repr, unknown))
        explained = self._solve(tokens, operative, limit, require_operative=False, future_cost=10**6)
        if explained is None:
            return "cannot be split into whole LEGOs (a LEGO used only in part, or a word missing?)"
        reasons = []
        future = [t for t in explained if not t.operative and t.positions[0] >= limit]
        if future:
            reasons.append(
                "uses "
                + ", ".join(f"{t.text!r} (LEGO position {t.positions[0]})" for t in future)
                + f", not available before position {limit}"
            )
        if not any(t.operative for t in explained):
            reasons.append("does not contain the operative LEGO")
        return "; ".join(reasons) or "does not tile"
