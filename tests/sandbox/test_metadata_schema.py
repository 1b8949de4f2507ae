"""Both `$metadata` documents validate against the OASIS CSDL XML schemas (issue 14).

The schemas are OASIS's own files, `edmx.xsd` and `edm.xsd` of the OData TC (CSDL XML 4.01),
not generated or abridged here. No PyPI or Debian package ships them; the npm package
`odata-csdl` of the OData TC (its repository oasis-tcs/odata-csdl-schemas, licence: the OASIS
IPR Policy) does, in `schemas/`. The test reads them from `tests/sandbox/schemas/` or from
that package installed beside the repository (`npm install --no-save odata-csdl`, giving
`node_modules/odata-csdl/schemas/`); without them it is skipped, saying so. They are read
with xmlschema's XSD 1.1 validator (one OASIS edition of `edmx.xsd` declares
`vc:minVersion="1.1"`; the validator reads XSD 1.0 documents as well).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import xmlschema

from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

REPO = Path(__file__).resolve().parents[2]
PLACES = (Path(__file__).parent / "schemas", REPO / "node_modules" / "odata-csdl" / "schemas")


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema11:
    for folder in PLACES:
        if (folder / "edmx.xsd").is_file() and (folder / "edm.xsd").is_file():
            return xmlschema.XMLSchema11(str(folder / "edmx.xsd"))
    shown = " or ".join(str(p) for p in PLACES)
    pytest.skip(f"the OASIS edmx.xsd and edm.xsd are not in {shown} (npm package odata-csdl)")


@pytest.fixture(scope="module")
def documents(bearer: Callable[..., str]) -> Iterator[dict[str, bytes]]:
    seed = demo_fixtures_dir()
    with Sandbox(seed / "crm", seed / "erp", alternate_keys=DEMO_ALTERNATE_KEYS) as sb:
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
