import numpy as np
import pytest
from repro.papers.random_forest_smoothers import (
    effective_parameters,
    forest_smoother,
    in_bag_counts,
    mars_additive,
    smoother_path,
    tree_smoother,
)
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor


@pytest.fixture(scope="module")
def data():
    X, y = mars_additive(120, d=5, sigma=1.0, rng=0)
    Xt, _ = mars_additive(80, d=5, sigma=1.0, rng=1)
    return X, y, Xt


@pytest.mark.parametrize("model", [
    RandomForestRegressor(n_estimators=15, bootstrap=True, max_features=0.6, random_state=0),
    RandomForestRegressor(n_estimators=15, bootstrap=True, max_samples=0.5, min_samples_leaf=3, random_state=1),
    RandomForestRegressor(n_estimators=10, bootstrap=False, max_features=0.4, random_state=2),
    ExtraTreesRegressor(n_estimators=10, bootstrap=True, random_state=3),
    DecisionTreeRegressor(min_samples_leaf=4, random_state=0),
])
def test_smoother_reproduces_predictions(data, model):
    X, y, Xt = data
    model.fit(X, y)
    for Xq in (X, Xt):
        S = forest_smoother(model, X, Xq)
        assert S.shape == (len(Xq), len(X))
        assert np.all(S >= 0)
        np.testing.assert_allclose(S.sum(1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(S @ y, model.predict(Xq), rtol=1e-10, atol=1e-10)


def test_ignoring_bootstrap_multiplicities_breaks_the_match(data):
    # the test above has teeth: unweighted leaf means are not the forest's predictions
    X, y, Xt = data
    rf = RandomForestRegressor(n_estimators=5, bootstrap=True, random_state=0).fit(X, y)
    counts = in_bag_counts(rf, len(X))
    assert counts.sum(1).tolist() == [len(X)] * 5 and counts.max() > 1
    tree = rf.estimators_[0]
    wrong = tree_smoother(tree.apply(Xt.astype(np.float32)), tree.apply(X.astype(np.float32)))
    assert not np.allclose(wrong @ y, tree.predict(Xt))


def test_fully_grown_tree_has_n_parameters(data):
    X, y, Xt = data
    tree = DecisionTreeRegressor(random_state=0).fit(X, y)
    S = forest_smoother(tree, X, X)
    np.testing.assert_allclose(S, np.eye(len(X)))
    assert effective_parameters(S) == pytest.approx(len(X))
    # on test inputs a fully grown tree also has one training point per leaf
    assert effective_parameters(forest_smoother(tree, X, Xt), len(X)) == pytest.approx(len(X))


def test_tree_train_parameters_equal_number_of_leaves(data):
    X, y, _ = data
    tree = DecisionTreeRegressor(min_samples_leaf=7, random_state=0).fit(X, y)
    p = effective_parameters(forest_smoother(tree, X, X))
    assert p == pytest.approx(tree.get_n_leaves())


def test_effective_parameters_known_answers():
    n = 10
    assert effective_parameters(np.eye(n)) == pytest.approx(n)
    assert effective_parameters(np.full((4, n), 1 / n)) == pytest.approx(1.0)
    # k-nearest-neighbour-like rows of k equal weights: n / k
    S = np.zeros((n, n))
    for i in range(n):
        S[i, [i, (i + 1) % n]] = 0.5
    assert effective_parameters(S) == pytest.approx(n / 2)


def test_tree_smoother_by_hand():
    S = tree_smoother(np.array([3, 5]), np.array([3, 3, 5, 5, 5]), weights=np.array([2, 1, 0, 1, 3]))
    np.testing.assert_allclose(S, [[2 / 3, 1 / 3, 0, 0, 0], [0, 0, 0, 1 / 4, 3 / 4]])


def test_path_ends_at_full_forest(data):
    X, y, Xt = data
    rf = RandomForestRegressor(n_estimators=8, max_features=0.4, random_state=0).fit(X, y)
    path = smoother_path(rf, X, {"train": X, "test": Xt}, every=2)
    assert path.n_trees.tolist() == [2, 4, 6, 8]
    assert path.test.iloc[-1] == pytest.approx(effective_parameters(forest_smoother(rf, X, Xt), len(X)))
    assert path.train.iloc[-1] == pytest.approx(effective_parameters(forest_smoother(rf, X, X)))


def test_mars_additive_truth():
    X, y, f = mars_additive(4000, d=6, sigma=2.0, rng=0, return_truth=True)
    assert X.shape == (4000, 6) and np.all((X >= 0) & (X <= 1))
    assert np.std(y - f) == pytest.approx(2.0, rel=0.05)
    expect = (0.1 * np.exp(4 * X[:, 0]) + 4 / (1 + np.exp(-20 * (X[:, 1] - 0.5))) + 3 * X[:, 2] + 2 * X[:, 3]
              + X[:, 4])
    np.testing.assert_allclose(f, expect)
    with pytest.raises(ValueError):
        mars_additive(10, d=4)
