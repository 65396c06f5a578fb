"""Job ids, the job store, its state machine and the recovery / retry rules (no Ray)."""

import pytest

from app.config import StrictModel
from app.errors import JobNotFound, SeedError
from app.serve import jobs as J


@pytest.mark.parametrize(
    "bad",
    ["../x", "..", "", "x" * 32, "A" * 32, "0" * 31, "0" * 33, "../" + "0" * 29, "0" * 31 + "/",
     "0" * 16 + "/../" + "0" * 12, "%2e%2e%2fx", "0" * 31 + "\n", None, 5],
)
def test_invalid_job_ids_are_refused_before_any_path(bad):
    with pytest.raises(J.InvalidJobId):
        J.job_dir(bad)


def test_new_job_ids_are_valid_and_random():
    ids = {J.new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(J.job_dir(i) == f"jobs/{i}" for i in ids)


def test_store_refuses_traversal_ids(storage):
    store = J.JobStore(storage)
    for bad in ("../registry", "../../etc/passwd"):
        with pytest.raises(J.InvalidJobId):
            store.status(bad)
        with pytest.raises(J.InvalidJobId):
            store.create("alice", {}, ["u1"], job_id=bad)
    assert not storage.exists("registry")


def _job(storage, owner="alice", seeds=("u1", "u2")):
    store = J.JobStore(storage)
    return store, store.create(owner, {"options": {"size": 5}}, list(seeds))


def test_create_writes_request_seeds_and_queued_status(storage):
    store, st = _job(storage)
    job_id = st["job_id"]
    assert st["state"] == J.QUEUED and st["attempts"] == 0 and st["owner"] == "alice"
    assert store.request(job_id) == {"owner": "alice", "options": {"size": 5}}
    assert store.seeds(job_id) == ["u1", "u2"]
    assert store.status(job_id) == st


def test_owner_isolation(storage):
    store, st = _job(storage)
    assert store.status_for(st["job_id"], "alice")["job_id"] == st["job_id"]
    with pytest.raises(JobNotFound) as other:
        store.status_for(st["job_id"], "bob")
    with pytest.raises(JobNotFound) as missing:
        store.status_for(J.new_job_id(), "bob")
    # the same message shape whether the job is someone else's or does not exist
    assert str(other.value).startswith("no job") and str(missing.value).startswith("no job")
    _job(storage, owner="bob")
    assert [s["owner"] for s in store.list_for("alice")] == ["alice"]
    assert len(store.list_for("bob")) == 1


def test_lifecycle_transitions(storage):
    store, st = _job(storage)
    job_id = st["job_id"]
    run = store.move(job_id, J.RUNNING)
    assert (run["state"], run["attempts"], run["progress"]) == (J.RUNNING, 1, 0.0)
    store.set_progress(job_id, 0.5, "similarity")
    assert store.status(job_id)["progress"] == 0.5
    done = store.move(job_id, J.FINISHED, counts={"audience": 5})
    assert done["progress"] == 1.0 and done["counts"] == {"audience": 5} and "finished_at" in done
    store.set_progress(job_id, 0.2, "late")  # ignored once final
    assert store.status(job_id)["state"] == J.FINISHED


@pytest.mark.parametrize(
    "path",
    [[J.FINISHED], [J.RUNNING, J.FINISHED, J.RUNNING], [J.RUNNING, J.FAILED, J.QUEUED], ["Exploded"]],
)
def test_forbidden_transitions(storage, path):
    store, st = _job(storage)
    with pytest.raises(J.InvalidTransition):
        for state in path:
            store.move(st["job_id"], state)


def test_retry_increments_attempts(storage):
    store, st = _job(storage)
    job_id = st["job_id"]
    store.move(job_id, J.RUNNING)
    store.move(job_id, J.QUEUED, message="retrying")
    assert store.move(job_id, J.RUNNING)["attempts"] == 2


@pytest.mark.parametrize(
    "state, attempts, expected",
    [(J.QUEUED, 0, "requeue"), (J.QUEUED, 5, "requeue"), (J.RUNNING, 1, "requeue"), (J.RUNNING, 2, "requeue"),
     (J.RUNNING, 3, "fail"), (J.FINISHED, 1, None), (J.FAILED, 3, None)],
)
def test_recovery_action(state, attempts, expected):
    assert J.recovery_action({"state": state, "attempts": attempts}, max_attempts=3) == expected


@pytest.mark.parametrize(
    "attempts, retryable, expected",
    [(1, True, "retry"), (2, True, "retry"), (3, True, "fail"), (1, False, "fail")],
)
def test_failure_action(attempts, retryable, expected):
    assert J.failure_action({"attempts": attempts}, 3, retryable) == expected


def test_all_status_skips_half_created_jobs(storage):
    store, st = _job(storage)
    half = J.new_job_id()
    storage.write_text(f"jobs/{half}/seeds.txt", "u1\n")  # crashed before status.json
    storage.makedirs("jobs/not-a-job")
    assert [s["job_id"] for s in store.all_status()] == [st["job_id"]]


class FakeExtendConfig(StrictModel):
    strategy: str = "din"
    size: int | None = None
    percentage: float | None = None
    top_n: int = 10


def fake_engine(storage, seeds, cfg, out_dir, progress=None):
    progress(0.5, "half")
    storage.write_text(f"{out_dir}/audience.csv", "did,score,rank\nz1,0.9,1\n")
    return {"counts": {"seeds": len(seeds), "audience": 1}, "strategy": cfg.strategy}


def failing_engine(storage, seeds, cfg, out_dir, progress=None):
    raise SeedError("only 0 of 2 seeds are known users")


def test_run_job_finishes_with_counts_and_url(storage):
    store, st = _job(storage)
    job_id = st["job_id"]
    store.move(job_id, J.RUNNING)
    out = J.run_job(storage.root, job_id, fake_engine, FakeExtendConfig, {"top_n": 3}, progress_interval_s=0)
    assert out["state"] == J.FINISHED
    assert out["counts"] == {"seeds": 2, "audience": 1}
    assert out["url"] == f"/lookalike/extended-audience/{job_id}"
    assert storage.read_bytes(f"jobs/{job_id}/audience.csv").startswith(b"did,score,rank")


def test_run_job_lets_engine_errors_through(storage):
    store, st = _job(storage)
    store.move(st["job_id"], J.RUNNING)
    with pytest.raises(SeedError):
        J.run_job(storage.root, st["job_id"], failing_engine, FakeExtendConfig, {})


def test_build_extend_config_request_overrides_defaults():
    cfg = J.build_extend_config(FakeExtendConfig, {"top_n": 3, "strategy": "jsd"}, {"size": 7, "strategy": None})
    assert (cfg.strategy, cfg.size, cfg.top_n) == ("jsd", 7, 3)


def test_summarize_report():
    assert J.summarize_report({"counts": {"a": 1}, "x": 2}) == {"a": 1}
    report = {"audience_size": 50, "out_dir": "jobs/x", "seeds": {"found": 3, "unknown": 1},
              "clusters": {"k": 2, "silhouette": 0.4, "sizes": [1, 2]}, "warnings": ["few seeds"], "files": ["a"]}
    assert J.summarize_report(report) == {"audience_size": 50, "seeds": {"found": 3, "unknown": 1},
                                          "clusters": {"k": 2, "silhouette": 0.4}, "warnings": ["few seeds"]}


def test_load_object():
    assert J.load_object("app.serve.jobs:new_job_id") is J.new_job_id
    assert J.load_object(len) is len
