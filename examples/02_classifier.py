"""The classifier end to end with the library: model from the registry, the shared training loop
(progress bar, checkpoints, prediction grids), then the test-split accuracy.

    python examples/02_classifier.py            # about a minute (--quick recipe)
    python examples/02_classifier.py --full     # the full CNN recipe
"""
import sys

from tinygen.train import TrainOptions, train

full = "--full" in sys.argv
summary = train("cnn", TrainOptions(dataset="mnist", quick=not full, out="runs/example-cnn"))
print(f"test accuracy {summary['test_acc']:.4f} after {summary['steps']} steps "
      f"({summary['cpu_seconds']} CPU seconds); pictures and last.npz in runs/example-cnn/")
