from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl

from p2c_etl.stages.diff import diff

D = pl.Decimal(19, 2)


def frame(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"k": pl.String, "name": pl.String, "amount": D}, orient="row")


def kinds(result_changes: pl.DataFrame) -> dict[str, tuple[str, list[str]]]:
    return {
        k: (kind, fields)
        for k, kind, fields in result_changes.select("k", "kind", "changed_fields").rows()
    }


def test_classifies_every_key_and_names_changed_fields() -> None:
    source = frame(
        [
            ("a", "Alpha", Decimal("1.10")),
            ("b", "Beta", Decimal("2.00")),
            ("c", "Gamma", Decimal("3.00")),
        ]
    )
    target = frame(
        [("a", "Alpha", Decimal("1.10")), ("b", "Beta", Decimal("2.01")), ("z", "Zed", None)]
    )
    result = diff(source, target, ["k"], ["name", "amount"])
    assert kinds(result.changes) == {
        "b": ("update", ["amount"]),
        "c": ("insert", []),
        "z": ("target_only", []),
    }
    assert result.unchanged == 1
    b = result.changes.filter(pl.col("k") == "b").row(0, named=True)
    assert '"amount":"2.01"' in b["before"] and '"amount":"2.00"' in b["after"]


def test_null_equals_null_and_empty_string_equals_null() -> None:
    source = frame([("a", None, None), ("b", "", Decimal("5"))])
    target = frame([("a", None, None), ("b", None, Decimal("5.00"))])
    result = diff(source, target, ["k"], ["name", "amount"])
    assert result.changes.height == 0
    assert result.unchanged == 2


def test_decimals_compare_exactly_even_beyond_float_precision() -> None:
    big = pl.Decimal(38, 2)
    source = pl.DataFrame(
        {"k": ["a"], "amount": [Decimal("12345678901234567.01")]},
        schema={"k": pl.String, "amount": big},
    )
    target = pl.DataFrame(
        {"k": ["a"], "amount": [Decimal("12345678901234567.02")]},
        schema={"k": pl.String, "amount": big},
    )
    assert kinds(diff(source, target, ["k"], ["amount"]).changes) == {"a": ("update", ["amount"])}


def test_null_to_value_and_value_to_null_are_changes() -> None:
    source = frame([("a", None, Decimal("1")), ("b", "B", None)])
    target = frame([("a", "A", Decimal("1")), ("b", "B", Decimal("0"))])
    assert kinds(diff(source, target, ["k"], ["name", "amount"]).changes) == {
        "a": ("update", ["name"]),
        "b": ("update", ["amount"]),
    }


def test_claimed_keys_are_not_target_only() -> None:
    source = frame([("a", "A", None)])
    target = frame([("a", "A", None), ("r", "Rejected", None), ("z", "Zed", None)])
    claimed = pl.DataFrame({"k": ["r"]})
    result = diff(source, target, ["k"], ["name", "amount"], claimed=claimed)
    assert kinds(result.changes) == {"z": ("target_only", [])}


def test_composite_keys() -> None:
    schema = {"co": pl.String, "k": pl.String, "v": pl.Int64}
    source = pl.DataFrame([("usmf", "1", 1), ("demf", "1", 2)], schema=schema, orient="row")
    target = pl.DataFrame([("usmf", "1", 1), ("demf", "1", 3)], schema=schema, orient="row")
    result = diff(source, target, ["co", "k"], ["v"])
    assert result.changes.select("co", "k", "kind").rows() == [("demf", "1", "update")]


# --- comparing as the target compares -----------------------------------------------------


def test_exact_keys_unless_asked_to_fold() -> None:
    result = diff(frame([("ACC-1", "A", None)]), frame([("acc-1", "A", None)]), ["k"], ["name"])
    assert kinds(result.changes) == {"ACC-1": ("insert", []), "acc-1": ("target_only", [])}


def test_folded_keys_are_one_record_under_the_target_spelling() -> None:
    source = frame(
        [("ACC-1", "A", Decimal("1")), ("acc-2 ", "B", Decimal("2")), ("NEW", "N", None)]
    )
    target = frame(
        [("acc-1", "A", Decimal("1")), ("ACC-2", "Bee", Decimal("2")), ("gone", "G", None)]
    )
    result = diff(source, target, ["k"], ["name", "amount"], fold_keys=True)
    assert kinds(result.changes) == {
        "ACC-2": ("update", ["name"]),
        "NEW": ("insert", []),
        "gone": ("target_only", []),
    }
    assert result.unchanged == 1
    assert result.respelt is not None
    assert sorted(result.respelt.rows()) == [("ACC-1", "acc-1"), ("acc-2 ", "ACC-2")]
    update = result.changes.filter(pl.col("kind") == "update").row(0, named=True)
    assert '"k":"ACC-2"' in update["before"] and '"k":"ACC-2"' in update["after"]
    assert '"name":"B"' in update["after"]


def test_folding_only_matches_what_the_exact_join_left_over() -> None:
    source = frame([("A", "x", None), ("b", "y", None)])
    target = frame([("A", "x", None), ("b", "z", None)])
    result = diff(source, target, ["k"], ["name"], fold_keys=True)
    assert kinds(result.changes) == {"b": ("update", ["name"])}
    assert result.respelt is None or result.respelt.height == 0


def test_claimed_keys_match_folded_when_keys_fold() -> None:
    source = frame([("a", "A", None)])
    target = frame([("a", "A", None), ("rej-1", "Rejected", None), ("z", "Zed", None)])
    claimed = pl.DataFrame({"k": ["REJ-1  "]})
    result = diff(source, target, ["k"], ["name"], claimed=claimed, fold_keys=True)
    assert kinds(result.changes) == {"z": ("target_only", [])}
    exact = diff(source, target, ["k"], ["name"], claimed=claimed)
    assert "rej-1" in kinds(exact.changes)


def test_folding_leaves_other_key_types_and_parts_exact() -> None:
    schema = {"co": pl.String, "n": pl.Int64, "name": pl.String}
    source = pl.DataFrame([("USMF", 1, "a"), ("usmf", 2, "b")], schema=schema, orient="row")
    target = pl.DataFrame([("usmf", 1, "a"), ("usmf", 3, "b")], schema=schema, orient="row")
    result = diff(source, target, ["co", "n"], ["name"], fold_keys=True)
    assert sorted(result.changes.select("co", "n", "kind").rows()) == [
        ("usmf", 2, "insert"),
        ("usmf", 3, "target_only"),
    ]
    assert result.unchanged == 1


def test_the_targets_empty_date_equals_null() -> None:
    """F&O holds 1900-01-01 as no date and returns it as empty: both spellings settle."""
    empty = date(1900, 1, 1)
    schema = {"k": pl.String, "day": pl.Date, "at": pl.Datetime("us", "UTC")}
    on_the_day = datetime(1900, 1, 1, 12, tzinfo=UTC)
    source = pl.DataFrame(
        [("a", empty, None), ("b", None, on_the_day), ("c", date(1900, 1, 2), None)],
        schema=schema,
        orient="row",
    )
    target = pl.DataFrame(
        [("a", None, None), ("b", empty, None), ("c", None, None)], schema=schema, orient="row"
    )
    folded = diff(source, target, ["k"], ["day", "at"], empty_date=empty)
    assert kinds(folded.changes) == {"c": ("update", ["day"])}
    assert folded.unchanged == 2
    exact = diff(source, target, ["k"], ["day", "at"])
    assert kinds(exact.changes) == {
        "a": ("update", ["day"]),
        "b": ("update", ["day", "at"]),
        "c": ("update", ["day"]),
    }


def test_a_diff_in_parts_keeps_each_key_in_one_part_whatever_its_spelling() -> None:
    """`compare.key_parts` splits a large diff by folded key: every spelling of a key (case,
    trailing spaces), on each side and among the claimed keys, lands in the same part."""
    from p2c_etl.flows import get_flow
    from p2c_etl.stages.compare import key_parts

    flow = get_flow("accounts")
    spellings = [[f"ACC-{i}", f"acc-{i} ", f"Acc-{i}  "] for i in range(200)]

    def frame(pick: int) -> pl.DataFrame:
        keys = [s[(i + pick) % 3] for i, s in enumerate(spellings)]
        return pl.DataFrame(
            {"dataAreaId": ["USMF" if pick else "usmf"] * 200, "CustomerAccount": keys}
        )

    parts = key_parts(flow, 7, frame(0), frame(1), frame(2))
    assert len(parts) == 7
    where: dict[str, set[int]] = {}
    for i, sides in enumerate(parts):
        for side in sides:
            for key in side["CustomerAccount"]:
                where.setdefault(key.strip().lower(), set()).add(i)
    assert len(where) == 200 and all(len(p) == 1 for p in where.values())
    assert len({next(iter(p)) for p in where.values()}) == 7  # and the parts are used


def test_a_diff_in_parts_takes_claims_as_text_as_the_whole_diff_does() -> None:
    """A claimed key of a rejected row is raw text ("seven", " 7") where the key is a whole
    number: splitting must not cast it (found by a reviewer: the run crashed), and a claim
    "7" lands with the record 7."""
    from p2c_etl.flows import get_flow
    from p2c_etl.stages.compare import key_parts

    flow = get_flow("quote_lines")
    company, numbers, lines = flow.keys
    staged = pl.DataFrame(
        {company: ["usmf"] * 50, numbers: [f"Q-{i}" for i in range(50)], lines: list(range(50))}
    )
    claimed = pl.DataFrame(
        {company: ["USMF"] * 3, numbers: ["Q-7", "q-7 ", "Q-8"], lines: ["7", "7", "seven"]}
    )
    parts = key_parts(flow, 4, staged, staged.clear(), claimed)
    with_seven = [i for i, (s, _, _) in enumerate(parts) if 7 in s[lines].to_list()]
    claims = [i for i, (_, _, c) in enumerate(parts) if "7" in c[lines].to_list()]
    assert with_seven == claims and sum(c.height for _, _, c in parts) == 3
