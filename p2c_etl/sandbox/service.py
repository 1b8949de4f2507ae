"""What the Dataverse and F&O services share: OData errors answered as error responses, and
the requests inside a `$batch` counted per endpoint."""

from __future__ import annotations

from abc import ABC, abstractmethod

from p2c_etl.sandbox.protocol import ApiRequest, ApiResponse, ODataError, from_error
from p2c_etl.sandbox.resource import endpoint_key
from p2c_etl.sandbox.stats import Stats


class ODataService(ABC):
    stats: Stats

    def handle(self, req: ApiRequest) -> ApiResponse:
        try:
            return self._route(req)
        except ODataError as error:
            return from_error(error)

    def _inner(self, req: ApiRequest) -> ApiResponse:
        """One request of a `$batch`: counted under its own endpoint, then handled."""
        self.stats.operation(endpoint_key(req.method, req.path))
        return self.handle(req)

    @abstractmethod
    def _route(self, req: ApiRequest) -> ApiResponse:
        """Answer one request of this service."""
