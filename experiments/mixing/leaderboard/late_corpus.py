"""A second multi-domain corpus for the mixer leaderboard, with another structure than the embedded default:
unequal domain sizes (so stratified != uniform) and one domain that becomes learnable only late.

- ``copy``    (2400 rows) easy: repeat the input words;
- ``lookup``  (1200 rows) learnable: translate ONE word with a fixed invented dictionary (memorisation);
- ``sort``    (800 rows)  learnable: sort 3-4 words alphabetically;
- ``late``    (400 rows)  compositional: translate every word with the same dictionary AND reverse the order,
  so it is learnable only once ``lookup``'s dictionary is known (its loss stays high early and falls late);
- ``noise``   (1600 rows) irreducible: random words, independent of the input.

Deterministic for a seed (byte-identical files); nothing is committed: the leaderboard script writes it
into its output folder. Uses the embedded vocabulary, so the bundled tokenizer encodes it compactly.

    python experiments/mixing/leaderboard/late_corpus.py --out /tmp/late_corpus
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from dataflex.data.embedded.generate import SYLLABLES, WORDS

SIZES = {"copy": 2400, "lookup": 1200, "sort": 800, "late": 400, "noise": 1600}
"""Training rows per domain (eval: EVAL_PER_DOMAIN each)."""
EVAL_PER_DOMAIN = 150
SEED = 2026


def dictionary(rng: random.Random) -> dict[str, str]:
    """English word -> an invented 2-3 syllable word, one-to-one."""
    used: set[str] = set()
    out = {}
    for word in WORDS:
        while (cand := "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))) in used:
            pass
        used.add(cand)
        out[word] = cand
    return out


def record(domain: str, rng: random.Random, table: dict[str, str]) -> dict[str, str]:
    if domain == "copy":
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 5))]
        return {"instruction": "Repeat the words.", "input": " ".join(words), "output": " ".join(words)}
    if domain == "lookup":
        word = rng.choice(WORDS)
        return {"instruction": "Translate the word to Velish.", "input": word, "output": table[word]}
    if domain == "sort":
        words = rng.sample(WORDS, rng.randint(3, 4))
        return {"instruction": "Sort the words.", "input": " ".join(words), "output": " ".join(sorted(words))}
    if domain == "late":
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 4))]
        out = " ".join(table[w] for w in reversed(words))
        return {"instruction": "Translate to Velish backwards.", "input": " ".join(words), "output": out}
    if domain == "noise":
        return {
            "instruction": "Continue the text.",
            "input": " ".join(rng.sample(WORDS, 3)),
            "output": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 7))),
        }
    raise ValueError(f"unknown domain {domain!r}")


def write_corpus(out: Path, seed: int = SEED) -> Path:
    """Writes <out>/<domain>/{train,eval}.jsonl and <out>/dataset_info.yaml; returns the dataset_info path."""
    table = dictionary(random.Random(seed))
    info = ["# The leaderboard's late-learnable corpus (experiments/mixing/leaderboard/late_corpus.py).", ""]
    for k, (domain, size) in enumerate(SIZES.items()):
        rng = random.Random(seed * 1000 + k)
        rows = [record(domain, rng, table) for _ in range(size + EVAL_PER_DOMAIN)]
        (out / domain).mkdir(parents=True, exist_ok=True)
        for split, part in (("train", rows[:size]), ("eval", rows[size:])):
            with open(out / domain / f"{split}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in part)
        info += [f"{domain}:", f"  path: {domain}/train.jsonl", f"  eval: {domain}/eval.jsonl"]
        info += ["  converter: alpaca", f"  domain: {domain}", ""]
    path = out / "dataset_info.yaml"
    path.write_text("\n".join(info), encoding="utf-8")
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=SEED)
    a = p.parse_args()
    print(write_corpus(a.out, a.seed))
