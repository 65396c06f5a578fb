"""Serve route: the cluster of one banner embedding with the current ``banner_clusters`` model.

``serve run configs/banners/serve.yaml`` (import path ``app.banners.serve:build_app``) starts a
small application of its own, so the lookalike service's ingress stays as it is::

    POST /banners/cluster  {"embedding": [d floats]}
      -> {"cluster_id": 3, "distance": 1.82, "model_version": "...", "k": 8}

It takes the lookalike service's arguments (``app.serve.config.ServeConfig``: root, API keys,
body limit) and the same edge: ``X-API-Key`` checked by :class:`app.serve.http.ApiKeyAuth`, bodies
bounded by :class:`app.serve.http.BodyGuard`, errors as ``{"detail", "error"}``: 422 for a vector
of the wrong length or with a non-finite value, 503 before any model is registered. A newly
registered model is picked up within ``REFRESH_S`` seconds.

No ``from __future__ import annotations``: FastAPI resolves the route signatures at run time.
"""

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve

from app.banners.model import ClusterModel, load_current
from app.errors import LookalikeError
from app.serve.errors import InvalidRequestBody
from app.serve.http import ApiKeyAuth, BodyGuard, exception_response, key_digest
from app.storage import Storage

ROUTE = "/banners/cluster"
REFRESH_S = 10.0


class ClusterRequest(BaseModel):
    embedding: list[float] = Field(min_length=1, description="one banner embedding (the model's dimension)")


class ClusterResponse(BaseModel):
    cluster_id: int
    distance: float
    model_version: str
    k: int


class ClusterService:
    """The current model (re-read from the registry every ``refresh_s``) and the assignment.
    ``loader(storage) -> (version, model)`` is injectable for tests."""

    def __init__(self, storage: Storage, loader: Callable[[Storage], tuple[str, ClusterModel]] = load_current,
                 refresh_s: float = REFRESH_S):
        self.storage, self.loader, self.refresh_s = storage, loader, refresh_s
        self._current: tuple[str, ClusterModel] | None = None
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    def current(self) -> tuple[str, ClusterModel]:
        with self._lock:
            if self._current is None or time.monotonic() - self._loaded_at >= self.refresh_s:
                self._current = self.loader(self.storage)  # ModelNotReady -> 503
                self._loaded_at = time.monotonic()
            return self._current

    def assign(self, embedding: list[float]) -> dict[str, Any]:
        version, model = self.current()
        x = np.asarray(embedding, dtype=np.float32)[None, :]
        if x.shape[1] != model.dim:
            raise InvalidRequestBody(f"embedding has {x.shape[1]} values; the model {version} takes {model.dim}")
        if not np.isfinite(x).all():
            raise InvalidRequestBody("embedding has a NaN or infinite value")
        labels, dist = model.assign(x)
        return {"cluster_id": int(labels[0]), "distance": float(dist[0]), "model_version": version, "k": model.k}


def make_api(service: ClusterService) -> FastAPI:
    """The FastAPI app of the route (tests call it with a fake loader, without Serve)."""
    api = FastAPI(title="Banner clusters", description="Cluster of a banner embedding (spec 002)")

    @api.exception_handler(LookalikeError)
    async def _error(request: Request, exc: LookalikeError) -> JSONResponse:
        return exception_response(exc)

    @api.post(ROUTE, response_model=ClusterResponse, tags=["banners"], summary="Cluster of one banner embedding")
    def cluster(req: ClusterRequest) -> Any:
        return service.assign(req.embedding)

    return api


@serve.deployment(name="BannerClusters")
@serve.ingress()
class BannerClusters:
    def __init__(self, root: str, key_owners: dict[str, str], body: dict[str, Any]):
        self.service = ClusterService(Storage(root))
        self.owners = {key_digest(k): owner for k, owner in key_owners.items()}
        self.body = body  # BodyGuard's default_limit, timeout_s, min_rate

    def __serve_build_asgi_app__(self) -> Any:
        app = make_api(self.service)
        app.add_middleware(ApiKeyAuth, owners=self.owners)
        app.add_middleware(BodyGuard, limits={}, **self.body)
        return app


def build_app(args: dict[str, Any] | None = None) -> Any:
    """Application builder (``serve run``): the lookalike service's args, keys resolved the same way."""
    from app.serve.app import deployment_options, resolve_config
    from app.serve.config import resolve_api_keys

    cfg = resolve_config(args)
    keys = resolve_api_keys(cfg)
    body = {"default_limit": cfg.max_body_bytes, "timeout_s": cfg.body_timeout_s, "min_rate": cfg.body_min_rate}
    return BannerClusters.options(**deployment_options(cfg)).bind(cfg.root, keys, body)
