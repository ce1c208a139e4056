"""Linear discriminant functions fitted by least squares (classifier.least_squares_discriminant)."""
import numpy as np

from tinygen.models.classifier import discriminants, least_squares_discriminant


def test_least_squares_gives_the_normal_equations_solution_and_separates_separable_classes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    images = rng.random((1000, 1, 28, 28)).astype(np.float32) * 0.2
    images[np.arange(1000), 0, 0, labels] += 1.0           # class k lights pixel (0, k): linearly separable
    W = least_squares_discriminant(images, labels, l2=0.0)
    X = np.concatenate([images.reshape(1000, -1), np.ones((1000, 1))], axis=1).astype(np.float64)
    T = np.eye(10)[labels]
    reference = np.linalg.lstsq(X, T, rcond=None)[0]      # argmin ||X W - T||^2 by another route
    assert W.shape == (785, 10)
    np.testing.assert_allclose(X @ W, X @ reference, atol=1e-3)
    assert (discriminants(W, images).argmax(axis=1) == labels).all()
    # the ridge term shrinks the weights
    assert np.abs(least_squares_discriminant(images, labels, l2=10.0)).sum() < np.abs(W).sum()
