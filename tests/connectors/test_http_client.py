"""The HTTP connectors against `httpx.MockTransport`: auth, retries, paging, bulk writes."""

import json
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from p2c_etl.config import Secret, SystemSettings, load_settings
from p2c_etl.connectors.auth import ClientCredentials
from p2c_etl.connectors.base import WriteBatch
from p2c_etl.connectors.dataverse import DataverseConnector
from p2c_etl.connectors.finops import FinOpsConnector
from p2c_etl.connectors.odata import RetryPolicy, batch_body, parse_batch
from p2c_etl.errors import AuthError, ConfigError, ConnectorError
from p2c_etl.model.contracts import ContractSet

SECRET = "s3cr3t-value"
Handler = Callable[[httpx.Request], httpx.Response]


def settings(kind: str = "dataverse", **extra: object) -> SystemSettings:
    base: dict[str, object] = dict(
        name="crm" if kind == "dataverse" else "erp",
        kind=kind,
        url="https://org.example",
        tenant="t",
        client_id="app",
        secret_env="P2C_SECRET",
        secret=Secret(SECRET),
        token_url="https://login.example/t/oauth2/v2.0/token",
        page_size=2,
        concurrency=2,
        company="usmf" if kind == "finops" else None,
    )
    base.update(extra)
    return SystemSettings(**base)  # type: ignore[arg-type]


class Recorder:
    """A mock service: a token endpoint plus `handler` for everything else."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.requests, self.tokens, self.sleeps = handler, [], 0, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            self.tokens += 1
            form = dict(x.split("=") for x in request.content.decode().split("&"))
            if form["client_secret"] != SECRET:
                return httpx.Response(401, json={"error": "invalid_client"})
            return httpx.Response(
                200, json={"access_token": f"tok{self.tokens}", "expires_in": 3599}
            )
        self.requests.append(request)
        return self.handler(request)

    def client(self, s: SystemSettings) -> httpx.Client:
        assert s.secret is not None and s.token_url and s.client_id
        auth = ClientCredentials(s.name, s.token_url, s.client_id, s.secret, "scope")
        return httpx.Client(transport=httpx.MockTransport(self), auth=auth)

    def retry(self) -> RetryPolicy:
        return RetryPolicy(attempts=4, sleep=self.sleeps.append)


def dataverse(
    handler: Handler, contracts: ContractSet, **extra: object
) -> tuple[DataverseConnector, Recorder]:
    recorder = Recorder(handler)
    s = settings(**extra)
    return DataverseConnector(s, contracts, recorder.client(s), recorder.retry()), recorder


def page(values: list[dict[str, object]], next_link: str | None = None) -> httpx.Response:
    body: dict[str, object] = {"value": values}
    if next_link:
        body["@odata.nextLink"] = next_link
    return httpx.Response(200, json=body)


def test_pages_follow_next_links_with_select_and_maxpagesize(contracts: ContractSet) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "skiptoken" in str(request.url):
            return page([{"productnumber": "P3", "price": 3}])
        return page(
            [{"productnumber": "P1", "price": 1.5}, {"productnumber": "P2", "price": "2.25"}],
            "https://org.example/api/data/v9.2/products?$skiptoken=abc",
        )

    conn, rec = dataverse(handler, contracts)
    frame = conn.snapshot("products", ["productnumber", "price"])
    assert frame.rows() == [("P1", Decimal("1.5")), ("P2", Decimal("2.25")), ("P3", Decimal("3"))]
    first = rec.requests[0]
    assert first.url.params["$select"] == "productnumber,price"
    assert first.headers["Prefer"] == "odata.maxpagesize=2"
    assert "$skip" not in str(rec.requests[1].url).replace("$skiptoken", "")
    assert rec.tokens == 1  # cached across pages


def test_the_next_page_is_requested_while_the_caller_works_on_this_one(
    contracts: ContractSet,
) -> None:
    asked = {n: threading.Event() for n in (2, 3)}

    def handler(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("$skiptoken", "1"))
        if n in asked:
            asked[n].set()
        link = f"https://org.example/api/data/v9.2/products?$skiptoken={n + 1}" if n < 3 else None
        return page([{"productnumber": f"P{n}", "price": n}], link)

    conn, rec = dataverse(handler, contracts)
    pages = conn.pages("products", ["productnumber", "price"])
    seen = []
    for n, frame in enumerate(pages, start=1):
        seen.extend(frame["productnumber"])
        if n in (1, 2):  # the link after this page is already on its way, not yet asked for
            assert asked[n + 1].wait(30), f"page {n + 1} was not requested ahead"
    assert seen == ["P1", "P2", "P3"]
    tokens = [r.url.params.get("$skiptoken") for r in rec.requests]
    assert tokens == [None, "2", "3"]  # each page once, in order


def test_a_next_link_written_before_the_records_is_followed_too(contracts: ContractSet) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "skiptoken" in str(request.url):
            return page([{"productnumber": "P2", "price": 2}])
        link = "https://org.example/api/data/v9.2/products?$skiptoken=x"
        body = {"@odata.nextLink": link, "value": [{"productnumber": "P1", "price": 1}]}
        return httpx.Response(200, content=json.dumps(body).encode())

    conn, rec = dataverse(handler, contracts)
    frame = conn.snapshot("products", ["productnumber", "price"])
    assert frame["productnumber"].to_list() == ["P1", "P2"]
    assert len(rec.requests) == 2


def _three_pages(prices: dict[int, object], link_first: bool = False) -> Handler:
    """A products collection of three pages, P1..P3 (page 3: P3 and P4), priced by `prices`;
    with `link_first`, page 2 writes its next link before its records."""

    def handler(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("$skiptoken", "1"))
        link = f"https://org.example/api/data/v9.2/products?$skiptoken={n + 1}" if n < 3 else None
        names = [f"P{n}"] if n < 3 else ["P3", "P4"]
        values = [{"productnumber": name, "price": prices.get(n, n)} for name in names]
        if link_first and n == 2:
            body = {"@odata.nextLink": link, "value": values}
            return httpx.Response(200, content=json.dumps(body).encode())
        return page(values, link)

    return handler


def test_a_read_with_the_print_it_had_before_parses_nothing(contracts: ContractSet) -> None:
    conn, _ = dataverse(_three_pages({}), contracts)
    columns = ["productnumber", "price"]
    first = conn.printed_snapshot("products", columns, None)
    assert first.frame is not None and first.printed is not None
    assert first.frame.equals(conn.snapshot("products", columns))
    again = conn.printed_snapshot("products", columns, first.printed)
    assert again.frame is None and again.printed == first.printed
    other = conn.printed_snapshot("products", ["productnumber"], first.printed)
    assert other.frame is not None and other.printed != first.printed  # other columns


@pytest.mark.parametrize("changed_page", [1, 2, 3])
def test_a_read_whose_page_changed_is_parsed_whole(
    contracts: ContractSet, changed_page: int
) -> None:
    before, _ = dataverse(_three_pages({}), contracts)
    known = before.printed_snapshot("products", ["productnumber", "price"], None).printed
    conn, _ = dataverse(_three_pages({changed_page: "9.5"}), contracts)
    read = conn.printed_snapshot("products", ["productnumber", "price"], known)
    assert read.frame is not None and read.printed not in (None, known)
    assert read.frame.equals(conn.snapshot("products", ["productnumber", "price"]))
    prices = dict(read.frame.iter_rows())
    assert [prices[f"P{n}"] for n in (1, 2, 3)] == [
        Decimal("9.5") if n == changed_page else Decimal(n) for n in (1, 2, 3)
    ]


def test_a_read_with_a_link_before_its_records_is_read_again_without_a_print(
    contracts: ContractSet,
) -> None:
    conn, rec = dataverse(_three_pages({}, link_first=True), contracts)
    read = conn.printed_snapshot("products", ["productnumber", "price"], None)
    assert read.printed is None and read.frame is not None
    assert read.frame["productnumber"].to_list() == ["P1", "P2", "P3", "P4"]
    tokens = [r.url.params.get("$skiptoken") for r in rec.requests]
    assert tokens == [None, "2", None, "2", "3"]  # stopped at page 2, then read by `pages`


def test_a_caller_slower_than_the_service_finds_each_next_page_already_asked_for(
    contracts: ContractSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages are read at most three ahead; when the caller takes one, the page waiting for
    room is asked for at once, not when the caller reaches it."""
    import p2c_etl.connectors.odata as odata

    last = 8
    asked = {n: threading.Event() for n in range(1, last + 1)}
    parsing = {n: threading.Event() for n in range(1, last + 1)}
    real = odata.parse_page

    def handler(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("$skiptoken", "1"))
        asked[n].set()
        link = f"https://org.example/api/data/v9.2/products?$skiptoken={n + 1}"
        return page([{"productnumber": f"P{n}", "price": n}], link if n < last else None)

    def parse(content: bytes, dtypes: Any, where: str) -> Any:
        frame, link = real(content, dtypes, where)
        parsing[int(frame["productnumber"][0][1:])].set()
        return frame, link

    monkeypatch.setattr(odata, "parse_page", parse)
    conn, rec = dataverse(handler, contracts)
    seen = []
    for n, frame in enumerate(conn.pages("products", ["productnumber", "price"]), start=1):
        seen.extend(frame["productnumber"])
        if n == 1:  # pages 2 to 4 are read ahead (4 parsed after its link was cut): full
            assert parsing[4].wait(30), "page 4 was not read ahead"
            assert not asked[5].is_set()
        if n < last:
            assert asked[n + 1].wait(30), f"page {n + 1} was not asked for ahead"
    assert seen == [f"P{n}" for n in range(1, last + 1)]
    assert [r.url.params.get("$skiptoken") for r in rec.requests] == [
        None,
        *(str(n) for n in range(2, last + 1)),
    ]


def test_a_print_tells_apart_reads_of_the_same_bytes_as_other_types(
    contracts: ContractSet,
) -> None:
    conn, _ = dataverse(_three_pages({}), contracts)
    url = "https://org.example/api/data/v9.2/products"
    as_float = {"productnumber": pl.String(), "price": pl.Float64()}
    as_number = {"productnumber": pl.String(), "price": pl.Decimal(38, 4)}
    first = conn.odata.printed_pages(url, as_float, None, None, None)
    again = conn.odata.printed_pages(url, as_number, None, None, first.printed)
    assert again.frames is not None and again.printed != first.printed
    assert conn.odata.printed_pages(url, as_number, None, None, again.printed).frames is None


def test_a_late_change_past_the_bytes_kept_reads_again_from_the_start(
    contracts: ContractSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import p2c_etl.connectors.odata as odata

    before, _ = dataverse(_three_pages({}), contracts)
    known = before.printed_snapshot("products", ["productnumber", "price"], None).printed
    monkeypatch.setattr(odata, "_HELD_BYTES", 1)  # page 1, alike, is not kept
    conn, rec = dataverse(_three_pages({3: "9.5"}), contracts)
    read = conn.printed_snapshot("products", ["productnumber", "price"], known)
    assert read.frame is not None and read.printed not in (None, known)
    assert read.frame["price"].to_list() == [Decimal(1), Decimal(2), Decimal("9.5"), Decimal("9.5")]
    tokens = [r.url.params.get("$skiptoken") for r in rec.requests]
    assert tokens == [None, "2", "3", None, "2", "3"]


def test_a_401_fetches_a_new_token_once(contracts: ContractSet) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer tok1":
            return httpx.Response(401, json={"error": {"message": "expired"}})
        return page([{"productnumber": "P1", "price": 1}])

    conn, rec = dataverse(handler, contracts)
    assert conn.snapshot("products", ["productnumber", "price"]).height == 1
    assert rec.tokens == 2


def test_a_wrong_secret_stops_with_a_message_that_hides_it(contracts: ContractSet) -> None:
    conn, _ = dataverse(lambda r: page([]), contracts, secret=Secret("wrong"))
    with pytest.raises(AuthError) as info:
        conn.snapshot("products", ["productnumber"])
    assert "refused client app" in str(info.value)
    assert "wrong" not in str(info.value) and SECRET not in str(info.value)
    assert "wrong" not in repr(settings(secret=Secret("wrong")))


def test_403_stops_naming_the_system(contracts: ContractSet) -> None:
    conn, _ = dataverse(
        lambda r: httpx.Response(403, json={"error": {"message": "no role"}}), contracts
    )
    with pytest.raises(AuthError, match=r"^crm: GET .*refused \(HTTP 403: no role\)"):
        conn.snapshot("products", ["productnumber"])


def test_429_waits_retry_after_and_503_backs_off(contracts: ContractSet) -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(503),
        page([{"productnumber": "P1"}]),
    ]
    conn, rec = dataverse(lambda r: answers.pop(0), contracts)
    assert conn.snapshot("products", ["productnumber"]).height == 1
    assert rec.sleeps[0] == 7.0
    assert 0 <= rec.sleeps[1] <= 1.0  # jittered backoff, attempt 1: up to base x 2


def test_retries_are_bounded(contracts: ContractSet) -> None:
    conn, rec = dataverse(lambda r: httpx.Response(503), contracts)
    with pytest.raises(ConnectorError, match="HTTP 503"):
        conn.snapshot("products", ["productnumber"])
    assert len(rec.requests) == 4

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    conn, rec = dataverse(timeout, contracts)
    with pytest.raises(ConnectorError, match="failed after 4 attempts: ReadTimeout"):
        conn.snapshot("products", ["productnumber"])


def test_upsert_multiple_isolates_the_record_the_service_refuses(contracts: ContractSet) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        targets = json.loads(request.content)["Targets"]
        if any(t["name"] == "bad" for t in targets):
            return httpx.Response(400, json={"error": {"message": "name 'bad' is not allowed"}})
        return httpx.Response(200, json={"Ids": [t["productid"] for t in targets]})

    conn, rec = dataverse(handler, contracts)
    names = ["a", "b", "bad", "c", "d"]
    inserts = pl.DataFrame(
        {
            "productid": [f"00000000-0000-0000-0000-00000000000{i}" for i in range(5)],
            "productnumber": [n.upper() for n in names],
            "name": names,
            "_transactioncurrencyid_value": ["11111111-1111-1111-1111-111111111111"] * 5,
            "price": [Decimal("1.10")] * 5,
        }
    )
    results = conn.upsert("products", WriteBatch(keys=("productnumber",), inserts=inserts))
    failed = results.filter(pl.col("status") == "failed").rows()
    assert failed == [("BAD", "insert", "failed", "HTTP 400: name 'bad' is not allowed")]
    assert results.filter(pl.col("status") == "ok").height == 4
    body = json.loads(rec.requests[0].content)["Targets"][0]
    assert body["@odata.type"] == "Microsoft.Dynamics.CRM.product"
    assert (
        body["transactioncurrencyid@odata.bind"]
        == "/transactioncurrencies(11111111-1111-1111-1111-111111111111)"
    )
    assert '"price":1.10' in rec.requests[0].content.decode()  # digits kept, never a float


def test_finops_batch_quotes_keys_and_keeps_other_records(contracts: ContractSet) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        text = request.content.decode()
        seen.append(text)
        ok = "HTTP/1.1 204 No Content\r\n\r\n"
        bad = (
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n"
            '{"error":{"message":"not found"}}'
        )
        boundary = "batchresponse_1"
        parts = [ok, bad] if "'O''Brien'" in text else [ok, ok]
        body = "".join(
            f"--{boundary}\r\nContent-Type: application/http\r\n\r\n{p}\r\n" for p in parts
        )
        return httpx.Response(
            200,
            content=(body + f"--{boundary}--\r\n").encode(),
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )

    recorder = Recorder(handler)
    s = settings("finops")
    conn = FinOpsConnector(s, contracts, recorder.client(s), recorder.retry())
    batch = WriteBatch(
        keys=("dataAreaId", "CustomerAccount"),
        inserts=pl.DataFrame(
            {"dataAreaId": ["usmf"], "CustomerAccount": ["NEW-1"], "CustomerGroupId": ["10"]}
        ),
        updates=(
            pl.DataFrame(
                {"dataAreaId": ["usmf"], "CustomerAccount": ["O'Brien"], "CustomerGroupId": ["20"]}
            ),
        ),
    )
    results = conn.upsert("CustomersV2", batch)
    assert (
        "PATCH https://org.example/data/CustomersV2(dataAreaId='usmf',CustomerAccount='O''Brien')"
        in seen[0]
    )
    post = seen[0].split("POST https://org.example/data/CustomersV2 HTTP/1.1\r\n")[1]
    assert post.split("\r\n\r\n")[0].splitlines() == [
        "Content-Type: application/json",
        "Prefer: return=minimal",  # the created record is not sent back
    ]
    assert results.rows() == [
        ("usmf|NEW-1", "insert", "ok", None),
        ("usmf|O'Brien", "update", "failed", "HTTP 404: not found"),
    ]


def test_batch_body_round_trips_through_the_multipart_parser() -> None:
    content_type, body = batch_body([])
    assert parse_batch(content_type, body) == []


def test_http_systems_need_their_secret_in_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "p2c.toml"
    config.write_text(
        '[systems.crm]\nkind = "dataverse"\nurl = "https://org.example"\ntenant = "t"\n'
        'client_id = "app"\nsecret_env = "P2C_CRM_SECRET"\n'
        '[systems.erp]\nkind = "files"\npath = "erp"\n'
    )
    settings_ok = load_settings(config, environ={"P2C_CRM_SECRET": SECRET})
    assert settings_ok.crm.secret is not None and settings_ok.crm.secret.reveal() == SECRET
    assert SECRET not in repr(settings_ok)
    missing = load_settings(config, environ={})
    from p2c_etl.connectors.session import http_client

    with pytest.raises(ConfigError, match=r"P2C_CRM_SECRET .* holds no client secret"):
        http_client(missing.crm, "scope")


def test_a_page_larger_than_a_parser_block_is_read_whole() -> None:
    from p2c_etl.connectors.odata import parse_page

    rows = [{"name": "x" * 200, "n": i} for i in range(10_000)]  # about 2.4 MB on one line
    frame, next_link = parse_page(
        json.dumps({"value": rows}).encode(), {"name": pl.String(), "n": pl.Int64()}, "test"
    )
    assert frame.height == 10_000 and next_link is None


def _batch_response(statuses: list[int]) -> httpx.Response:
    boundary = "batchresponse_9"
    parts = "".join(
        f"--{boundary}\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 {s} X\r\n\r\n"
        + ('{"error":{"message":"bad"}}' if s >= 400 else "")
        + "\r\n"
        for s in statuses
    )
    return httpx.Response(
        200,
        content=(parts + f"--{boundary}--\r\n").encode(),
        headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
    )


def test_dataverse_batches_continue_on_error_and_unanswered_records_fail(
    contracts: ContractSet,
) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return _batch_response([204, 400])  # the service stopped after the second

    conn, _ = dataverse(handler, contracts)
    ids = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(3)]
    update = pl.DataFrame(
        {"productnumber": ["A", "B", "C"], "productid": ids, "name": ["a", "b", "c"]}
    )
    results = conn.upsert("products", WriteBatch(("productnumber",), pl.DataFrame(), (update,)))
    assert sent[0].headers["Prefer"] == "odata.continue-on-error"
    assert results["status"].to_list() == ["ok", "failed", "failed"]
    assert "stopped the $batch" in results["message"][2]


def test_a_throttled_bulk_write_is_not_split_record_by_record(contracts: ContractSet) -> None:
    conn, rec = dataverse(lambda r: httpx.Response(429, headers={"Retry-After": "1"}), contracts)
    inserts = pl.DataFrame(
        {
            "productid": [f"00000000-0000-0000-0000-00000000000{i}" for i in range(8)],
            "productnumber": [f"P{i}" for i in range(8)],
        }
    )
    with pytest.raises(ConnectorError, match="UpsertMultiple"):
        conn.upsert("products", WriteBatch(("productnumber",), inserts))
    assert len(rec.requests) == 4  # one chunk, its retries, no halving


def test_a_token_endpoint_without_a_token_is_a_clear_error(contracts: ContractSet) -> None:
    recorder = Recorder(lambda r: page([]))
    s = settings()

    def portal(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, content=b"<html>sign in</html>")
        return page([])

    assert s.secret is not None and s.token_url and s.client_id
    auth = ClientCredentials(s.name, s.token_url, s.client_id, s.secret, "scope")
    client = httpx.Client(transport=httpx.MockTransport(portal), auth=auth)
    conn = DataverseConnector(s, contracts, client, recorder.retry())
    with pytest.raises(AuthError, match="answered without a token"):
        conn.snapshot("products", ["productnumber"])


def test_clearing_a_polymorphic_customer_fails_that_record_alone(contracts: ContractSet) -> None:
    conn, _ = dataverse(lambda r: _batch_response([204]), contracts)
    update = pl.DataFrame(
        {
            "ordernumber": ["SO-1", "SO-2"],
            "salesorderid": [
                "00000000-0000-0000-0000-000000000001",
                "00000000-0000-0000-0000-000000000002",
            ],
            "_customerid_value": [None, None],
            "name": ["x", "y"],
        },
        schema_overrides={"_customerid_value": pl.String},
    )
    keep = update.select("ordernumber", "salesorderid", "name").head(1)
    results = conn.upsert(
        "salesorders", WriteBatch(("ordernumber",), pl.DataFrame(), (keep, update.tail(1)))
    )
    assert results.select("record_key", "status").rows() == [("SO-1", "ok"), ("SO-2", "failed")]
    assert "clear it in Sales" in results["message"][1]


def test_an_insert_resent_after_a_timeout_is_confirmed_not_failed(contracts: ContractSet) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.method == "GET":  # the record the first try wrote is there
            return httpx.Response(200, json={"CustomerAccount": "C1"})
        if calls.count("POST /data/$batch") == 1:
            return httpx.Response(504)  # applied, but the answer was lost
        return _batch_response([400])  # the resend: "already exists"

    recorder = Recorder(handler)
    s = settings("finops")
    conn = FinOpsConnector(s, contracts, recorder.client(s), recorder.retry())
    inserts = pl.DataFrame(
        {"dataAreaId": ["usmf"], "CustomerAccount": ["C1"], "CustomerGroupId": ["10"]}
    )
    results = conn.upsert("CustomersV2", WriteBatch(("dataAreaId", "CustomerAccount"), inserts))
    assert results.rows() == [("usmf|C1", "insert", "ok", None)]
    assert calls[-1] == "GET /data/CustomersV2(dataAreaId='usmf',CustomerAccount='C1')"
