"""Both `$metadata` documents validate against the OASIS CSDL XML schemas (issue 14).

The schemas are OASIS's own files, `edmx.xsd` and `edm.xsd` of the OData TC
(docs.oasis-open.org/odata/odata-csdl-xml/v4.01/os/schemas/), kept beside this test in
`schemas/`; they are not generated or abridged here. `edmx.xsd` is an XSD 1.1 document
(`vc:minVersion="1.1"`), so it is read with xmlschema's XSD 1.1 validator. Without the two
files the test is skipped, saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import xmlschema

from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.server import Sandbox

SCHEMAS = Path(__file__).parent / "schemas"


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema11:
    edmx = SCHEMAS / "edmx.xsd"
    if not (edmx.is_file() and (SCHEMAS / "edm.xsd").is_file()):
        pytest.skip(f"the OASIS edmx.xsd and edm.xsd are not in {SCHEMAS}")
    return xmlschema.XMLSchema11(str(edmx))


@pytest.fixture(scope="module")
def documents(bearer: Callable[..., str]) -> Iterator[dict[str, bytes]]:
    seed = demo_fixtures_dir()
    with Sandbox(seed / "crm", seed / "erp") as sb:
        token = bearer(sb)
        headers = {"Authorization": f"Bearer {token}"}
        yield {
            "crm": httpx.get(f"{sb.crm_url}/api/data/v9.2/$metadata", headers=headers).content,
            "erp": httpx.get(f"{sb.erp_url}/data/$metadata", headers=headers).content,
        }


@pytest.mark.parametrize("system", ["crm", "erp"])
def test_metadata_validates_against_the_oasis_csdl_schema(
    schema: xmlschema.XMLSchema11, documents: dict[str, bytes], system: str
) -> None:
    errors = [str(e) for e in schema.iter_errors(documents[system].decode("utf-8"))]
    assert errors == [], errors[:3]
