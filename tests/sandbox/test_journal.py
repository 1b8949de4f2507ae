"""The store's journal: `atomic()` blocks nest, an exception undoes exactly the writes of the
block it leaves, commits are counted once (by the outermost block), and the lock is free
again after any block, failed or not; `utc_now` is the time to the second."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from p2c_etl.model.contracts import ContractSet
from p2c_etl.resources import contracts_dir
from p2c_etl.sandbox.seed import build_store
from p2c_etl.sandbox.store import Store, Table, utc_now


@pytest.fixture
def store_and_commits() -> tuple[Store, list[int]]:
    commits: list[int] = []
    store = build_store("erp", None, ContractSet.load(contracts_dir()), commits.append)
    return store, commits


def groups(store: Store) -> Table:
    table = store.table("CustomersV2")
    assert table is not None
    return table


def record(account: str) -> dict[str, object]:
    return {"dataAreaId": "usmf", "CustomerAccount": account, "OrganizationName": account}


def ids(table: Table) -> list[object]:
    return [row.values["CustomerAccount"] for row in table.rows()]


def lock_is_free(store: Store) -> bool:
    """Whether another thread can take the store's lock (an RLock held here would let this
    thread in again, so ask from another one)."""
    taken: list[bool] = []

    def attempt() -> None:
        got = store.lock.acquire(timeout=5)
        taken.append(got)
        if got:
            store.lock.release()

    worker = threading.Thread(target=attempt)
    worker.start()
    worker.join()
    return taken == [True]


def test_a_block_commits_its_writes_once(store_and_commits: tuple[Store, list[int]]) -> None:
    store, commits = store_and_commits
    table = groups(store)
    with store.journal.atomic():
        table.put(record("A"))
        with store.journal.atomic():
            table.put(record("B"))
        table.put(record("C"))
    assert ids(table) == ["A", "B", "C"]
    assert commits == [3]
    assert lock_is_free(store)


def test_a_failed_inner_block_undoes_only_its_own_writes(
    store_and_commits: tuple[Store, list[int]],
) -> None:
    store, commits = store_and_commits
    table = groups(store)
    with store.journal.atomic():
        table.put(record("A"))
        with pytest.raises(RuntimeError), store.journal.atomic():
            table.put(record("B"))
            table.put(record("A") | {"OrganizationName": "changed"})
            raise RuntimeError("refused")
        table.put(record("C"))
    assert ids(table) == ["A", "C"]
    assert [row.values["OrganizationName"] for row in table.rows()] == ["A", "C"]
    assert commits == [2]
    assert lock_is_free(store)


def test_a_failed_outer_block_undoes_everything_and_commits_nothing(
    store_and_commits: tuple[Store, list[int]],
) -> None:
    store, commits = store_and_commits
    table = groups(store)
    table.put(record("kept"))  # outside any block: committed on its own
    with pytest.raises(ValueError), store.journal.atomic():
        table.put(record("A"))
        with store.journal.atomic():
            table.put(record("B"))
        raise ValueError("the change set failed")
    assert ids(table) == ["kept"]
    assert commits == [1]
    assert lock_is_free(store)
    with store.journal.atomic():  # and the journal works on afterwards
        table.put(record("D"))
    assert ids(table) == ["kept", "D"]
    assert commits == [1, 1]


def test_utc_now_is_the_current_second() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    now = utc_now()
    after = datetime.now(UTC)
    assert now.microsecond == 0 and now.tzinfo is UTC
    assert before <= now <= after
    assert utc_now() - now < timedelta(seconds=2)
