"""The banner-cluster route through FastAPI's test client (no Serve): answers, errors, refresh."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.banners.model import ClusterModel
from app.banners.serve import ROUTE, ClusterService, make_api
from app.errors import ModelNotReady

MODEL = ClusterModel(np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32), 2)


def _client(loader, refresh_s=60.0):
    return TestClient(make_api(ClusterService(storage=None, loader=loader, refresh_s=refresh_s)))


def test_assigns_the_nearest_centre():
    r = _client(lambda s: ("v1", MODEL)).post(ROUTE, json={"embedding": [9.0, 1.0]})
    assert r.status_code == 200
    body = r.json()
    assert (body["cluster_id"], body["model_version"], body["k"]) == (1, "v1", 2)
    assert body["distance"] == pytest.approx(np.sqrt(2), rel=1e-5)


@pytest.mark.parametrize("payload, status, error", [
    ({"embedding": [1.0, 2.0, 3.0]}, 422, "invalid_body"),
    ({"embedding": []}, 422, None),
    ({"vector": [1.0, 2.0]}, 422, None),
])
def test_bad_embeddings_are_refused(payload, status, error):
    r = _client(lambda s: ("v1", MODEL)).post(ROUTE, json=payload)
    assert r.status_code == status
    if error:
        assert r.json()["error"] == error and "takes 2" in r.json()["detail"]


def test_non_finite_value_is_refused():
    service = ClusterService(storage=None, loader=lambda s: ("v1", MODEL))
    with pytest.raises(Exception, match="NaN or infinite"):
        service.assign([float("nan"), 1.0])


def test_no_model_yet_is_503():
    def missing(storage):
        raise ModelNotReady("no current 'banner_clusters' model")

    r = _client(missing).post(ROUTE, json={"embedding": [1.0, 2.0]})
    assert r.status_code == 503 and r.json()["error"] == "model_not_ready"


def test_a_new_model_is_picked_up_after_refresh():
    versions = iter([("v1", MODEL), ("v2", ClusterModel(MODEL.centres[::-1].copy(), 2))])
    service = ClusterService(storage=None, loader=lambda s: next(versions), refresh_s=0.0)
    assert service.assign([9.0, 0.0])["cluster_id"] == 1
    again = service.assign([9.0, 0.0])
    assert (again["model_version"], again["cluster_id"]) == ("v2", 0)


def test_build_app_binds_the_route_with_the_services_keys(tmp_path, monkeypatch):
    from app.banners.serve import build_app
    from app.errors import ConfigError

    monkeypatch.delenv("LOOKALIKE_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="no API keys"):
        build_app({"root": str(tmp_path)})
    app = build_app({"root": str(tmp_path), "api_keys": {"banner-key-1": "me"}})
    assert type(app).__name__ == "Application"
