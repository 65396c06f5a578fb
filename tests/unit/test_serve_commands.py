"""``python -m app serve prune``: the retention policy applied once from the command line."""

import json

from app.cli import main
from app.serve import jobs as J
from app.storage import Storage


def _summary(captured) -> dict:
    """The command's JSON summary: everything before its last line (the log file's path)."""
    body, last = captured.out.rstrip().rsplit("\n", 1)
    assert last.startswith("log: ")
    return json.loads(body)


def test_serve_prune_deletes_old_seeds_and_reports(tmp_path, capfd):
    store = J.JobStore(Storage(str(tmp_path)))
    done = store.create("alice", {}, ["u1", "u2"])["job_id"]
    store.move(done, J.RUNNING)
    store.move(done, J.FINISHED)
    waiting = store.create("bob", {}, ["u3"])["job_id"]
    code = main(["serve", "prune", "--root", str(tmp_path), "--set", "retention.seeds_after_s=0"])
    out = _summary(capfd.readouterr())
    assert code == 0 and out["seeds_deleted"] == 1 and out["jobs_deleted"] == 0
    assert out["retention"]["seeds_after_s"] == 0
    assert not (tmp_path / "jobs" / done / "seeds.txt").exists()
    assert (tmp_path / "jobs" / waiting / "seeds.txt").exists()  # not final: kept
    # the shipped policy (7 days) deletes nothing of a job finished just now
    store2 = J.JobStore(Storage(str(tmp_path / "other")))
    fresh = store2.create("alice", {}, ["u1"])["job_id"]
    store2.move(fresh, J.RUNNING)
    store2.move(fresh, J.FINISHED)
    assert main(["serve", "prune", "--root", str(tmp_path / "other")]) == 0
    assert _summary(capfd.readouterr())["seeds_deleted"] == 0
