#!/usr/bin/env python3
"""An independent check of what a learner reads in a basket file: spans, not glue.

It does not use phase5's alignment or tiler: plain string checks a bilingual reader would make.

- e-phrases whose target or known side is not a piece of any one seed pair as written (for the
  offline corpus backend, every e-phrase should be one);
- d-phrases whose target is not a piece of one of its basket's e-phrase targets as written, and
  d-phrases whose known side is not a piece of that e-phrase's known side;
- phrases with a word doubled ("to to") that their source does not double;
- usable (3-5 e-phrases) and empty baskets.

    python scripts/check_text.py ../shared/data/spa_for_eng lego_baskets.json [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from worker.course import Course

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


def doubled(text: str) -> set[str]:
    words = [w.lower() for w in WORD.findall(text)]
    return {a for a, b in zip(words, words[1:], strict=False) if a == b}


def check(course: Course, baskets: dict[str, Any]) -> dict[str, Any]:
    seeds = [(s.target, s.known) for s in course.source.seeds]
    seed_doubled_t = set().union(*(doubled(t) for t, _ in seeds))
    seed_doubled_k = set().union(*(doubled(k) for _, k in seeds))
    figures = dict.fromkeys(
        (
            "baskets",
            "usable",
            "empty",
            "e_phrases",
            "e_target_not_in_a_seed",
            "e_known_not_in_its_seed",
            "e_doubled",
            "d_phrases",
            "d_target_not_as_written",
            "d_known_not_in_its_e",
            "d_doubled",
        ),
        0,
    )
    examples: dict[str, list[Any]] = {key: [] for key in figures}

    def count(key: str, example: Any = None) -> None:
        figures[key] += 1
        if example is not None and len(examples[key]) < 5:
            examples[key].append(example)

    for lego_id in course.ids:
        basket = baskets.get(lego_id)
        if not isinstance(basket, dict):
            continue
        figures["baskets"] += 1
        e = [tuple(p) for p in basket.get("e", [])]
        figures["usable"] += 3 <= len(e) <= 5
        figures["empty"] += not e
        for target, known in e:
            figures["e_phrases"] += 1
            holders = [(t, k) for t, k in seeds if target.strip(" .?!¿¡。？！") in t]
            if not holders:
                count("e_target_not_in_a_seed", (lego_id, target))
            elif not any(known.strip(" .?!") in k for _, k in holders):
                count("e_known_not_in_its_seed", (lego_id, target, known))
            if doubled(target) - seed_doubled_t or doubled(known) - seed_doubled_k:
                count("e_doubled", (lego_id, target, known))
        for pairs in basket.get("d", {}).values():
            for target, known in pairs:
                figures["d_phrases"] += 1
                sources = [(t, k) for t, k in e if target in t]
                if not sources:
                    count("d_target_not_as_written", (lego_id, target))
                elif not any(known in k for _, k in sources):
                    count("d_known_not_in_its_e", (lego_id, target, known))
                source_t = set().union(*(doubled(t) for t, _ in e)) if e else set()
                source_k = set().union(*(doubled(k) for _, k in e)) if e else set()
                if doubled(target) - source_t or doubled(known) - source_k:
                    count("d_doubled", (lego_id, target, known))
    shares = {
        "e_target_not_in_a_seed_pct": _pct(figures["e_target_not_in_a_seed"], figures["e_phrases"]),
        "e_known_not_in_its_seed_pct": _pct(figures["e_known_not_in_its_seed"], figures["e_phrases"]),
        "d_target_not_as_written_pct": _pct(figures["d_target_not_as_written"], figures["d_phrases"]),
        "d_known_not_in_its_e_pct": _pct(figures["d_known_not_in_its_e"], figures["d_phrases"]),
        "usable_pct": _pct(figures["usable"], figures["baskets"]),
        "empty_pct": _pct(figures["empty"], figures["baskets"]),
    }
    return {**figures, **shares, "examples": {k: v for k, v in examples.items() if v}}


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("course", type=Path)
    parser.add_argument("baskets", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    course = Course.load(args.course)
    data = json.loads(args.baskets.read_text(encoding="utf-8"))
    result = check(course, data.get("baskets", data) if isinstance(data, dict) else {})
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        for key, value in result.items():
            if key != "examples":
                print(f"{key:32} {value}")
        for key, found in result["examples"].items():
            print(f"e.g. {key}: {found[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
