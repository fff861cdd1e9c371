"""The embedded dataset is what its generator produces, and the tokenizer covers it."""

from __future__ import annotations

import filecmp

from dataflex.data.embedded import generate


def test_generator_reproduces_the_shipped_files(tmp_path):
    generate.write_dataset(tmp_path)
    shipped = generate.DATA_DIR
    for domain in generate.DOMAINS:
        for split in ("train", "eval"):
            assert filecmp.cmp(
                tmp_path / domain / f"{split}.jsonl", shipped / domain / f"{split}.jsonl", shallow=False
            )
    assert (tmp_path / "dataset_info.yaml").read_text() == (shipped / "dataset_info.yaml").read_text()


def test_domains_have_train_and_eval_and_are_distinct():
    records = generate.generate_records()
    assert len(records) >= 4
    for splits in records.values():
        assert (
            len(splits["train"]) == generate.TRAIN_PER_DOMAIN
            and len(splits["eval"]) == generate.EVAL_PER_DOMAIN
        )
        assert all(set(r) == {"instruction", "input", "output"} for r in splits["train"][:10])
    instructions = {d: {r["instruction"] for r in s["train"]} for d, s in records.items()}
    assert not set.intersection(*instructions.values())


def test_noise_outputs_do_not_depend_on_the_input():
    rows = generate.generate_records()["noise"]["train"]
    same_input = {}
    for r in rows:
        same_input.setdefault(r["input"].split()[0], set()).add(r["output"])
    assert max(len(v) for v in same_input.values()) > 1


def test_bundled_tokenizer_has_no_unknowns():
    from dataflex.models.tiny import load_tokenizer

    tok = load_tokenizer()
    for line in generate.corpus_lines()[::500]:
        assert tok.decode(tok.encode(line, add_special_tokens=False)) == line
