"""Trainers that read samples by id refuse a streaming source by name before anything loads."""

from __future__ import annotations

import pytest

from dataflex.run import validate


@pytest.mark.parametrize(
    "trainer", [("trainer=dynamic_select", "component=loss"), ("trainer=dynamic_weight", "component=loss")]
)
def test_index_trainers_refuse_streaming_naming_the_token_store(compose, trainer):
    with pytest.raises(
        ValueError, match=r"needs an index over the training data.*data\.streaming=true.*token store"
    ):
        validate(compose(*trainer, "data.streaming=true"))


def test_streaming_entry_in_dataset_info_is_named(compose, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "dataset_info.yaml").write_text("web:\n  path: a.jsonl\n  streaming: true\n")
    with pytest.raises(
        ValueError, match=r"DynamicSelectTrainer needs an index.*\['web'\] set `streaming: true`"
    ):
        validate(compose("trainer=dynamic_select", "component=loss", f"data.dataset={tmp_path}"))
