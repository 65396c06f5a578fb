"""Job ids, the job store, its state machine and the recovery / retry rules (no Ray)."""

import time

import pytest

from app.config import StrictModel
from app.errors import JobNotFound, SeedError
from app.serve import jobs as J
from app.serve.errors import InvalidCursor


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
    assert [s["owner"] for s in store.list_for("alice")[0]] == ["alice"]
    assert len(store.list_for("bob")[0]) == 1


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


# ---------------------------------------------------------------- unreadable records
@pytest.mark.parametrize(
    "content",
    [b'{"job_id": "', b"[]", b"", b"\xff\xfe", b'{"state": "Queued"}', b"null", b'"Queued"',
     b'{"job_id": "%s", "owner": "alice", "state": "Exploded", "created_at": 1, "updated_at": 1}',
     b'{"job_id": "%s", "owner": "alice", "state": "Queued", "created_at": NaN, "updated_at": 1}',
     b'{"job_id": "%s", "owner": "../x", "state": "Queued", "created_at": 1, "updated_at": 1}',
     b'{"job_id": "%s", "owner": "alice", "state": "Queued", "progress": 7, "created_at": 1, "updated_at": 1}',
     b'{"job_id": "0123456789abcdef0123456789abcdef", "owner": "alice", "state": "Queued", "created_at": 1, "updated_at": 1}'],
    ids=["truncated", "list", "empty", "not-utf8", "no-fields", "null", "string", "bad-state", "nan-time",
         "bad-owner", "progress-7", "other-job-id"],
)
def test_unreadable_status_is_reported_failed_without_a_path(storage, content):
    store, st = _job(storage)
    job_id = st["job_id"]
    content = content.replace(b"%s", job_id.encode())
    storage.write_bytes(f"jobs/{job_id}/status.json", content)
    with pytest.raises(J.UnreadableJobRecord) as err:
        store.status(job_id)
    assert str(err.value) == f"job {job_id}: unreadable status" or "another job" in str(err.value)
    assert storage.root not in str(err.value)
    view = store.status_for(job_id, "alice")  # its owner (from request.json) sees it Failed
    assert (view["state"], view["error"]) == (J.FAILED, "unreadable status")
    with pytest.raises(JobNotFound):
        store.status_for(job_id, "bob")
    assert [(s["job_id"], s["state"]) for s in store.list_for("alice")[0]] == [(job_id, J.FAILED)]
    assert list(store.scan()) == [(job_id, None)]


def test_one_unreadable_record_never_hides_the_others(storage):
    store = J.JobStore(storage)
    good = [store.create(o, {}, ["u1"])["job_id"] for o in ("alice", "bob", "alice")]
    bad = store.create("alice", {}, ["u1"])["job_id"]
    storage.write_bytes(f"jobs/{bad}/status.json", b"[]")
    assert {s["job_id"] for s in store.all_status()} == set(good)
    assert [s["job_id"] for s in store.list_for("alice")[0]] == [bad, good[2], good[0]]
    assert [s["job_id"] for s in store.list_for("bob")[0]] == [good[1]]


def test_quarantine_replaces_the_bad_status_and_keeps_its_bytes(storage):
    store, st = _job(storage)
    job_id = st["job_id"]
    storage.write_bytes(f"jobs/{job_id}/status.json", b'{"job_id": "tru')
    status = store.quarantine(job_id)
    assert status["state"] == J.FAILED and status["error"] == "unreadable status"
    assert store.status(job_id) == status  # readable again, and final
    assert status["created_at"] == pytest.approx(st["created_at"], abs=1e-3)  # from its index entry
    assert [s["job_id"] for s in store.list_for("alice")[0]] == [job_id]  # listed once
    assert storage.read_bytes(f"jobs/{job_id}/status.unreadable.json") == b'{"job_id": "tru'
    # without a readable owner nothing can be said about it: left as it is
    storage.write_bytes(f"jobs/{job_id}/request.json", b"[]")
    storage.write_bytes(f"jobs/{job_id}/status.json", b"[]")
    assert store.quarantine(job_id) is None
    assert storage.read_bytes(f"jobs/{job_id}/status.json") == b"[]"


def test_unreadable_request_fails_the_job_not_the_worker(storage):
    store, st = _job(storage)
    storage.write_bytes(f"jobs/{st['job_id']}/request.json", b"{")
    store.move(st["job_id"], J.RUNNING)
    with pytest.raises(J.UnreadableJobRecord, match="unreadable request"):
        J.run_job(storage.root, st["job_id"], fake_engine, FakeExtendConfig, {})


# ---------------------------------------------------------------- re-queue, heartbeat
def test_requeue_clears_the_interrupted_attempts_progress(storage):
    store, st = _job(storage)
    job_id = st["job_id"]
    store.move(job_id, J.RUNNING)
    store.set_progress(job_id, 0.7, "similarity")
    queued = store.move(job_id, J.QUEUED, message="retrying")
    assert queued["progress"] == 0.0 and "heartbeat_at" not in queued and "started_at" not in queued
    rerun = store.move(job_id, J.RUNNING)
    assert rerun["progress"] == 0.0 and "heartbeat_at" not in rerun  # until its worker has begun


def test_writes_of_an_old_attempt_are_ignored(storage):
    store, st = _job(storage)
    job_id = st["job_id"]
    store.move(job_id, J.RUNNING)
    store.move(job_id, J.QUEUED)
    store.move(job_id, J.RUNNING)  # attempt 2
    assert not store.set_progress(job_id, 0.9, "late write of attempt 1", attempt=1)
    assert store.status(job_id)["progress"] == 0.0
    assert store.set_progress(job_id, 0.4, "attempt 2", attempt=2)
    assert store.status(job_id)["progress"] == 0.4


def test_heartbeat_thread_beats_while_the_engine_runs(storage):
    store, st = _job(storage)
    job_id = st["job_id"]
    store.move(job_id, J.RUNNING)
    beats = []

    def quiet_engine(storage_, seeds, cfg, out_dir, progress=None):
        for _ in range(6):
            time.sleep(0.05)
            beats.append(store.status(job_id).get("heartbeat_at"))
        storage_.write_text(f"{out_dir}/audience.csv", "did,score,rank\n")
        return {"counts": {"audience": 0}}

    out = J.run_job(storage.root, job_id, quiet_engine, FakeExtendConfig, {}, heartbeat_s=0.02)
    assert out["state"] == J.FINISHED and "heartbeat_at" not in out
    assert len(set(beats)) >= 3  # the heartbeat moved while the engine said nothing


# ---------------------------------------------------------------- the owner index
def test_listing_reads_only_the_owners_status_files(storage, monkeypatch):
    store = J.JobStore(storage)
    mine = [store.create("alice", {}, ["u1"])["job_id"] for _ in range(3)]
    for _ in range(20):
        store.create("bob", {}, ["u1"])
    read = []
    real = J.JobStore.status
    monkeypatch.setattr(J.JobStore, "status", lambda self, job_id: read.append(job_id) or real(self, job_id))
    assert [s["job_id"] for s in store.list_for("alice", limit=2)[0]] == mine[::-1][:2]
    assert sorted(read) == sorted(mine[::-1][:2])


def test_pages_walk_every_job_once_newest_first(storage):
    store = J.JobStore(storage)
    ids = [store.create("alice", {}, ["u1"])["job_id"] for _ in range(7)]
    store.create("bob", {}, ["u1"])
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = store.list_for("alice", limit=3, cursor=cursor)
        seen += [s["job_id"] for s in page]
        pages += 1
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3
    # a job created while paging does not shift the older pages
    first, cursor = store.list_for("alice", limit=3)
    store.create("alice", {}, ["u1"])
    assert [s["job_id"] for s in store.list_for("alice", limit=3, cursor=cursor)[0]] == ids[::-1][3:6]


def test_a_full_last_page_has_no_cursor_and_a_bad_cursor_is_refused(storage):
    store = J.JobStore(storage)
    for _ in range(2):
        store.create("alice", {}, ["u1"])
    assert store.list_for("alice", limit=2)[1] is None
    with pytest.raises(InvalidCursor):
        store.list_for("alice", cursor="../../etc")


def test_a_crash_between_index_entry_and_status_leaves_no_ghost(storage):
    store = J.JobStore(storage)
    job_id = store.create("alice", {}, ["u1"])["job_id"]
    storage.delete(f"jobs/{job_id}/status.json")  # as if the process died before writing it
    assert store.list_for("alice")[0] == []
    assert store.prune(None, None, incomplete_after_s=0, at=time.time() + 10)["incomplete_deleted"] == 1
    assert store.sync_index() == {"added": 0, "removed": 1}


def test_sync_index_adds_missing_and_drops_dangling_entries(storage):
    store = J.JobStore(storage)
    a = store.create("alice", {}, ["u1"])["job_id"]
    b = store.create("bob", {}, ["u1"])["job_id"]
    # a job whose index entry was never written (crash after status.json), and a dangling entry
    storage.delete(f"{J.INDEX}/owner=bob")
    storage.write_bytes(f"{J.INDEX}/owner=alice/{J.marker_name(1.0, '0' * 32)}", b"")
    assert store.sync_index() == {"added": 1, "removed": 1}
    assert [s["job_id"] for s in store.list_for("bob")[0]] == [b]
    assert [s["job_id"] for s in store.list_for("alice")[0]] == [a]
    assert store.sync_index() == {"added": 0, "removed": 0}


def test_a_missing_index_is_rebuilt_on_listing(storage):
    store = J.JobStore(storage)
    ids = [store.create("alice", {}, ["u1"])["job_id"] for _ in range(3)]
    storage.delete(J.INDEX)
    assert not store.index_exists()
    assert [s["job_id"] for s in store.list_for("alice")[0]] == ids[::-1]
    assert store.index_exists()


# ---------------------------------------------------------------- retention
def test_prune_deletes_seeds_then_jobs_of_final_jobs_only(storage):
    store = J.JobStore(storage)
    done = store.create("alice", {}, ["u1"])["job_id"]
    store.move(done, J.RUNNING)
    store.move(done, J.FINISHED)
    running = store.create("alice", {}, ["u1"])["job_id"]
    store.move(running, J.RUNNING)
    half = J.new_job_id()
    storage.write_json(f"jobs/{half}/request.json", {"owner": "alice"})  # crashed before status.json
    finished_at = store.status(done)["finished_at"]

    assert store.prune(100, None, 10_000, at=finished_at + 50)["seeds_deleted"] == 0  # too young
    counts = store.prune(100, None, 10_000, at=finished_at + 150)
    assert counts["seeds_deleted"] == 1 and counts["incomplete_deleted"] == 0
    assert not storage.exists(f"jobs/{done}/seeds.txt") and storage.exists(f"jobs/{running}/seeds.txt")
    assert store.status(done)["seeds_pruned_at"] == pytest.approx(finished_at + 150)
    with pytest.raises(SeedError, match="retention"):
        store.seeds(done)
    counts = store.prune(100, 1000, 10, at=finished_at + 2000)
    assert (counts["jobs_deleted"], counts["incomplete_deleted"]) == (1, 1)
    assert not storage.exists(f"jobs/{done}") and not storage.exists(f"jobs/{half}")
    assert [s["job_id"] for s in store.list_for("alice")[0]] == [running]
    assert store.prune(None, None, None, at=finished_at + 10**9) == {
        "seeds_deleted": 0, "jobs_deleted": 0, "incomplete_deleted": 0, "unreadable_kept": 0}


# ---------------------------------------------------------------- error messages
def test_describe_error_is_one_line_without_paths(storage):
    root = storage.root
    exc = FileNotFoundError(f"[Errno 2] Failed to open local file '{root}/jobs/x/seeds.txt'. Detail: [errno 2]")
    text = J.describe_error(exc, root)
    assert text == "FileNotFoundError: [Errno 2] Failed to open local file 'jobs/x/seeds.txt'. Detail: [errno 2]"
    from app.errors import ModelNotReady

    text = J.describe_error(ModelNotReady(f"no current 'din' model in {root!r}/registry.json; train one"), root)
    assert text == "ModelNotReady: no current 'din' model in the storage root/registry.json; train one"
    assert J.describe_error(OSError("cannot read /etc/some/file.txt\nsecond line")) == (
        "OSError: cannot read <path> second line")
    assert "/lookalike/extended-audience/ab" in J.scrub_paths("see /lookalike/extended-audience/ab")
    assert J.scrub_paths(f"at {root} and {root}-old/x", root) == "at the storage root and <path>"


def test_jsd_critical_error_reaches_the_client_whole_and_in_the_services_terms():
    from app.extend.jsd import NO_FEATURE_ERROR

    text = J.describe_error(SeedError(NO_FEATURE_ERROR))
    assert text.startswith("SeedError: the jsd strategy found no feature") and "strategy=din" in text
    assert "\n" not in text and "selectTopFeatures" not in text
    other = J.describe_error(SeedError("Critical Error:\nsomething else\nhere"))
    assert other == "SeedError: Critical Error: something else here"
