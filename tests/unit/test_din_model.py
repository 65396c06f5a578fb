"""The DIN model: masking, save -> load -> same predictions, the exported scorer (no Ray)."""

import numpy as np
import pytest
import tensorflow as tf

from app.errors import SchemaError
from app.train.config import DinModelConfig
from app.train.din import MODEL_FEATURES, build_din, compile_din
from app.train.export import BatchScorer, export_saved_model, write_scorer_meta

K, T = 12, 5
SMALL = DinModelConfig(embedding_dim=4, attention_units=[6, 3], mlp_units=[8, 4])


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    n_hist = rng.integers(0, T + 1, n)
    valid = np.arange(T)[None] < n_hist[:, None]
    return {
        "age": rng.integers(0, 10, n),
        "gender": rng.integers(0, 2, n),
        "hist_kwi": np.where(valid, rng.integers(1, K, (n, T)), 0),
        "hist_show_counts": np.where(valid, rng.integers(1, 6, (n, T)), 0),
        "hist_click_counts": np.where(valid, rng.integers(0, 2, (n, T)), 0),
        "target_kwi": rng.integers(1, K, n),
    }


@pytest.fixture(scope="module")
def trained_model():
    tf.keras.utils.set_random_seed(0)
    model = compile_din(build_din(K, T, SMALL), 1e-2)
    x = _batch(64)
    y = np.random.default_rng(1).integers(0, 2, (64, 1)).astype("float32")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)  # moves Dice statistics away from init
    return model


def test_output_is_a_probability_per_row(trained_model):
    p = trained_model.predict(_batch(10), verbose=0)
    assert p.shape == (10, 1) and p.dtype == np.float32
    assert np.all((p > 0) & (p < 1))


def test_padding_content_changes_nothing(trained_model):
    x = _batch(32, seed=3)
    pad = x["hist_kwi"] == 0
    assert pad.any()
    y = {k: v.copy() for k, v in x.items()}
    y["hist_show_counts"][pad] = 99  # garbage counts in padding slots
    y["hist_click_counts"][pad] = 7
    np.testing.assert_allclose(
        trained_model.predict(x, verbose=0), trained_model.predict(y, verbose=0), atol=1e-6
    )


def test_history_matters(trained_model):
    x = _batch(32, seed=4)
    y = {k: v.copy() for k, v in x.items()}
    y["hist_kwi"] = np.where(y["hist_kwi"] > 0, (y["hist_kwi"] % (K - 1)) + 1, 0)
    assert not np.allclose(trained_model.predict(x, verbose=0), trained_model.predict(y, verbose=0))


def test_save_load_same_predictions_and_scorer(trained_model, tmp_path, storage):
    x = _batch(20, seed=5)
    want = trained_model.predict(x, verbose=0).ravel()
    rel = "models/din/v1"
    export_saved_model(trained_model, storage.path(rel, "saved_model"), T)
    write_scorer_meta(storage, rel, T, K, [f"k{i}" for i in range(1, K)])
    reloaded = tf.keras.models.load_model(storage.path(rel, "saved_model"))
    np.testing.assert_allclose(reloaded.predict(x, verbose=0).ravel(), want, rtol=1e-5, atol=1e-6)

    scorer = BatchScorer.load(storage.path(rel))
    assert (scorer.num_keywords, scorer.hist_len, scorer.keywords[0]) == (K, T, "k1")
    got = scorer.score(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    users = {k: v[:3] for k, v in x.items() if k != "target_kwi"}
    scorer.chunk_rows = 7  # force several batched calls
    grid = scorer.score_all_keywords(users)
    assert grid.shape == (3, K - 1)
    rows = {k: np.repeat(v, K - 1, axis=0) for k, v in users.items()}
    rows["target_kwi"] = np.tile(np.arange(1, K), 3)
    np.testing.assert_allclose(
        grid.ravel(), trained_model.predict(rows, verbose=0).ravel(), rtol=1e-5, atol=1e-6
    )

    with pytest.raises(SchemaError, match="target_kwi"):
        scorer.score({**x, "target_kwi": np.zeros(20, np.int64)})
    with pytest.raises(SchemaError, match="lacks"):
        scorer.score({k: v for k, v in x.items() if k != "age"})
    with pytest.raises(SchemaError, match="shape"):
        scorer.score({**x, "hist_kwi": x["hist_kwi"][:, :2]})


def test_serving_signature_is_named_and_flat(tmp_path, trained_model):
    export_saved_model(trained_model, str(tmp_path / "sm"), T)
    sig = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert sorted(sig.structured_input_signature[1]) == sorted(MODEL_FEATURES)
    assert list(sig.structured_outputs) == ["prob"]


def test_build_refuses_a_vocabulary_without_keywords():
    with pytest.raises(ValueError, match="num_keywords"):
        build_din(1, T, SMALL)
