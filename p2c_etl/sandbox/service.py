"""What the Dataverse and F&O services share: OData errors answered as error responses, the
requests inside a `$batch` counted per endpoint, and the service and metadata documents
(GET only)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache

from p2c_etl.sandbox.csdl import metadata_document
from p2c_etl.sandbox.options import NONE, check_options
from p2c_etl.sandbox.protocol import (
    NOT_SUPPORTED,
    ApiRequest,
    ApiResponse,
    ODataError,
    from_error,
)
from p2c_etl.sandbox.query import service_document
from p2c_etl.sandbox.resource import endpoint_key
from p2c_etl.sandbox.stats import Stats
from p2c_etl.sandbox.store import Store

_ANNOTATIONS = frozenset({"annotations"})

# A `$batch` of creates names one path a thousand times: its key is found once.
_endpoint_key = lru_cache(maxsize=1024)(endpoint_key)


class ODataService(ABC):
    stats: Stats
    store: Store

    def handle(self, req: ApiRequest) -> ApiResponse:
        try:
            return self._route(req)
        except ODataError as error:
            return from_error(error)

    def _inner(self, req: ApiRequest) -> ApiResponse:
        """One request of a `$batch`: counted under its own endpoint, then handled."""
        self.stats.operation(_endpoint_key(req.method, req.path))
        return self.handle(req)

    def documents(
        self, req: ApiRequest, namespace: str, tracked: Callable[[str], bool] | None = None
    ) -> ApiResponse | None:
        """The service document (`/`) or `$metadata`; None for any other path. With
        `tracked` (Dataverse), `$metadata?annotations=true` marks the sets that track
        changes."""
        if req.path not in ("", "$metadata"):
            return None
        if req.method != "GET":
            raise ODataError(405, f"{req.method} is not allowed here; use GET", NOT_SUPPORTED)
        annotated = tracked is not None and req.path == "$metadata"
        check_options(req, NONE, _ANNOTATIONS if annotated else NONE)
        if req.path == "":
            return service_document(req, self.store)
        wanted = req.query.get("annotations", "false")
        if wanted not in ("true", "false"):
            raise ODataError(400, f"annotations must be true or false, not {wanted!r}")
        shown = tracked if wanted == "true" else None
        document = metadata_document(self.store, namespace, shown)
        return ApiResponse(200, {"Content-Type": "application/xml"}, document)

    @abstractmethod
    def _route(self, req: ApiRequest) -> ApiResponse:
        """Answer one request of this service."""
