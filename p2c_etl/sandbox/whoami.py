"""`WhoAmI` (`GET WhoAmI` or `GET WhoAmI()`): the caller's `UserId`, `BusinessUnitId` and
`OrganizationId`.

The caller is the application user of the client the bearer token was issued to; its ids are
derived from the client id and the tenant (the same client always gets the same user), and
the organization and its root business unit from the tenant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from p2c_etl.sandbox.options import NONE, check_options
from p2c_etl.sandbox.protocol import NOT_SUPPORTED, ApiRequest, ApiResponse, ODataError
from p2c_etl.sandbox.protocol import json_response as _json


@dataclass(frozen=True)
class Identity:
    """Who a bearer token belongs to: `client_of(authorization)` gives its client id."""

    default_client: str
    tenant: str
    client_of: Callable[[str | None], str | None]

    def ids(self, authorization: str | None) -> dict[str, str]:
        client = self.client_of(authorization) or self.default_client
        return {
            "BusinessUnitId": _id(f"{self.tenant}/businessunit"),
            "UserId": _id(f"{self.tenant}/systemuser/{client}"),
            "OrganizationId": _id(f"{self.tenant}/organization"),
        }


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"p2c-sandbox:{name}"))


def who_am_i(req: ApiRequest, identity: Identity) -> ApiResponse:
    if req.method != "GET":
        raise ODataError(405, "WhoAmI is a function: call it with GET", NOT_SUPPORTED)
    check_options(req, NONE)
    context = f"{req.root}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"
    body = {"@odata.context": context, **identity.ids(req.header("authorization"))}
    return _json(200, json.dumps(body).encode())
