"""Every offline job through the CLI's parser and commands, on a tiny generated log, under the
session's local Ray; the models are checked against the planted truth."""

from __future__ import annotations

import pytest

from app.cli import build_parser
from app.offline import truth
from app.offline.common import read_model_table
from app.registry import Registry
from app.storage import Storage

pytestmark = pytest.mark.integration


def offline(root: str, job: str, *extra: str) -> dict:
    args = build_parser().parse_args(["offline", job, "--smoke", "--root", root, *extra])
    return args.func(args)


def test_offline_jobs_end_to_end(ray_local, tmp_path):
    root = str(tmp_path / "root")
    gen = offline(root, "generate")
    for day in ("20150101", "20150102"):
        rep = offline(root, "actions", "--set", f"input_date_string={day}")
        assert rep["tasks"] > 2  # the smoke byte ranges split each file
    assert rep["lines"] + offline(root, "actions")["lines"] == gen["lines"]  # the first day again: same
    storage = Storage(root)
    assert storage.read_table("tables/quarantine/offline_actions").num_rows > 0
    assert sorted(storage.iter_dirs("offline/actions")) == ["client=client1", "client=client2"]

    als = offline(root, "matrix-factorization")
    recs = read_model_table(storage, "matrix-factorization", "client1", "user_recs")
    assert recs.num_rows == als["users"] and len(recs["items"][0]) == 5

    sim = offline(root, "similar-items", "--set", "dimsum_threshold=0.5")
    assert sim["method"] == "dimsum" and sim["error_vs_exact"]["pairs_at_threshold"] >= 0
    truth_json = storage.read_json("raw/actions/truth.json")
    groups = truth_json["n_groups"]
    sims = read_model_table(storage, "similar-items", "client1", "similarities")
    assert truth.neighbour_precision(sims.slice(0, 2000), groups) > 0.5

    offline(root, "session-items")
    offline(root, "word2vec")
    nearest = read_model_table(storage, "word2vec", "client1", "nearest")
    assert truth.neighbour_precision(nearest, groups) > 0.6  # chance: 1/5

    clusters = offline(root, "cluster-by-dimension")
    members = read_model_table(storage, "cluster-by-dimension", "client1", "user_clusters")
    assert clusters["clusters"] >= 1
    accuracy = truth.cluster_accuracy(members, truth_json["favourite_group"]["client1"])
    assert accuracy["favourite_found"] > 0.9 and accuracy["rows_in_favourite"] > 0.5
    assert offline(root, "tag-affinity")["users_with_tags"] > 0

    offline(root, "basket-analysis")
    offline(root, "fpgrowth")
    quality = truth.rule_quality(read_model_table(storage, "fpgrowth", "client1", "rules"), truth_json["bundles"])
    assert quality["precision"] > 0.9 and quality["bundle_rule_recall"] > 0.5

    models = Registry(storage).read()["models"]
    assert {f"offline.{j}.client1" for j in ("matrix-factorization", "similar-items", "session-items", "word2vec",
                                             "cluster-by-dimension", "tag-affinity", "basket-analysis",
                                             "fpgrowth")} <= set(models)
