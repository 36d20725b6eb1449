"""DynamoDB's 400 KB item limit, enforced where the data enters and answered as a permanent error
where a row still would not fit (moto server; the sizes are DynamoDB's documented accounting)."""

from __future__ import annotations

import pytest

from tasks import storage, table
from tasks.constants import DYNAMODB_ITEM_LIMIT, MAX_ID_LENGTH, MAX_ROW_BYTES, MAX_TITLE_LENGTH, MAX_TOP_N
from tasks.errors import PermanentError
from tasks.layout import FALLBACK_USER

# The costliest characters: a control character is 6 bytes once JSON-escaped (\u0001), an emoji 4
# bytes of UTF-8; ids may not hold control characters (tasks.constants.USER_ID_PATTERN).
WORST_TITLE = "\x01" * MAX_TITLE_LENGTH
WORST_ID = "\U0001f600" * MAX_ID_LENGTH


def worst_row(user: str, n: int = MAX_TOP_N, title: str = WORST_TITLE) -> dict:
    items = table.encode_items([f"{WORST_ID[:-3]}{i:03d}" for i in range(n)], [-1.2345678e-10] * n, [title] * n)
    return table.rec_item(user, "v20261207T020000s-abcdef", items, "2026-12-07T02:00:00.000000+00:00", 2_000_000_000)


@pytest.mark.parametrize("user", [WORST_ID, FALLBACK_USER])
def test_the_largest_row_the_snapshot_can_produce_fits_with_margin_and_is_written(aws, user):
    """A user's own list (or the popularity row) at top_n max, every title at the bound in the
    costliest characters, every id at the bound: under MAX_ROW_BYTES, written to the table."""
    row = worst_row(user)
    size = table.item_bytes(row)
    assert size <= MAX_ROW_BYTES < DYNAMODB_ITEM_LIMIT
    assert size < 0.6 * DYNAMODB_ITEM_LIMIT  # the margin the constants' comment promises
    assert table.write_items(aws["table"], [row]) == 1
    got = table.get_recommendations(aws["table"], "v20261207T020000s-abcdef", user)
    assert len(got) == MAX_TOP_N and got[0]["title"] == WORST_TITLE


def test_a_row_over_the_bound_is_a_permanent_error_naming_key_and_size():
    """A title that did not pass today's snapshot (a snapshot written before the bound)."""
    with pytest.raises(table.RowTooLargeError) as err:
        worst_row(FALLBACK_USER, n=10, title="x" * 450_000)
    assert isinstance(err.value, PermanentError)
    text = str(err.value)
    assert "user_id='__popular__'" in text and "bytes, over the pipeline's 358,400" in text
    assert "MAX_TITLE_LENGTH" in text


def test_a_write_dynamodb_refuses_is_a_permanent_error_not_a_retried_traceback(aws):
    """The item limit as the service answers it (ValidationException): no pre-check in the way."""
    big = {"user_id": {"S": "u1"}, "model_version": {"S": "v1"}, "items": {"S": "x" * 450_000}}
    with pytest.raises(table.RefusedWriteError, match=r"DynamoDB refused a batch write to recs-test \(rows 'u1'/v1\)"):
        table.write_batch(aws["table"], [big])


def test_finalize_with_a_450kb_title_exits_3_with_the_reason(aws, capsys):
    """It was: snapshot, train and score passed; finalize died with a traceback (exit 1, retried)
    writing the popularity row, every night."""
    import pandas as pd

    from tasks.data import generate
    from tasks.errors import EXIT_NO_RETRY, run_cli
    from tasks.publish.__main__ import main
    from tasks.score import score_shard
    from tasks.train import TrainConfig, train

    ratings, items = generate(40, 60, 1_200, seed=5)
    ratings = ratings.astype({"user_id": str, "item_id": str})
    items = items.astype({"item_id": str})
    snap = f"s3://{aws['bucket']}/datasets/ds=2026-11-23"
    model = f"s3://{aws['bucket']}/models/v1"
    storage.write_parquet(f"{snap}/ratings.parquet", ratings)
    storage.write_parquet(f"{snap}/items.parquet", items)
    train(snap, model, TrainConfig(sweeps=2))
    score_shard(model, snap, "v1", 5, shard=(0, 1), table_name=aws["table"])
    popular = ratings.item_id.value_counts().index[0]
    items = pd.concat([items[items.item_id != popular],
                       pd.DataFrame({"item_id": [popular], "title": ["t" * 450_000]})], ignore_index=True)
    storage.write_parquet(f"{snap}/items.parquet", items)  # as a snapshot from before the bound could hold
    code = run_cli(main, ["finalize", "--model", model, "--ratings", snap, "--model-version", "v1", "--top-n", "5",
                          "--shards", "1", "--table", aws["table"]])
    err = capsys.readouterr().err
    assert code == EXIT_NO_RETRY and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("RECSYS-ERROR: row user_id='__popular__'") and "over the pipeline's" in last
    assert table.get_marker(aws["table"], "v1") is None  # the version stays invisible
