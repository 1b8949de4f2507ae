"""`$batch` responses are split on their boundaries, change sets flattened, in order."""

from __future__ import annotations

import pytest

from p2c_etl.connectors.odata import BatchResponse, parse_batch
from p2c_etl.errors import ConnectorError

RESPONSE = (
    "--batchresponse_1\r\n"
    "Content-Type: multipart/mixed; boundary=changesetresponse_a\r\n\r\n"
    "--changesetresponse_a\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n"
    "HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n"
    "OData-EntityId: https://org.example/api/data/v9.2/accounts(1)\r\n\r\n\r\n"
    "--changesetresponse_a--\r\n"
    "--batchresponse_1\r\n"
    "Content-Type: multipart/mixed; boundary=changesetresponse_b\r\n\r\n"
    "--changesetresponse_b\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 2\r\n\r\n"
    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n"
    '{"error":{"code":"0x80040237","message":"A record with the key \\u00ab--x\\u00bb exists"}}'
    "\r\n--changesetresponse_b--\r\n"
    "--batchresponse_1\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{"id": "é"}\r\n'
    "--batchresponse_1--\r\n"
)


def test_a_batch_response_with_change_sets_is_read_in_order() -> None:
    answers = parse_batch("multipart/mixed; boundary=batchresponse_1", RESPONSE.encode())
    assert [a.status for a in answers] == [204, 400, 201]
    assert answers[0].body == ""
    assert answers[1].message == "HTTP 400: A record with the key «--x» exists"
    assert answers[2] == BatchResponse(201, '{"id": "é"}')


def test_line_feeds_alone_and_a_quoted_boundary_read_the_same() -> None:
    lf = RESPONSE.replace("\r\n", "\n").encode()
    answers = parse_batch('multipart/mixed; boundary="batchresponse_1"', lf)
    assert [a.status for a in answers] == [204, 400, 201]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/mixed; boundary=batchresponse_1", RESPONSE.encode()[:-30]),
    ],
)
def test_an_unreadable_batch_response_is_a_connector_error(content_type: str, body: bytes) -> None:
    with pytest.raises(ConnectorError, match=r"unreadable \$batch response"):
        parse_batch(content_type, body)
