"""The classifier end to end with the library: model from the registry, the shared training loop
(progress bar, checkpoints, prediction grids), then the test-split accuracy.

    python examples/02_classifier.py            # about a minute (--quick recipe)
    python examples/02_classifier.py --full     # the full CNN recipe
"""
import sys

from tinygen.train import TrainOptions, train

full = "--full" in sys.argv
# overwrite=True: each run of the example starts over in its folder (a fresh run never replaces another
# run's files unless asked to; `python -m tinygen train` asks with --overwrite)
summary = train("cnn", TrainOptions(dataset="mnist", quick=not full, out="runs/example-cnn", overwrite=True))
print(f"test accuracy {summary['test_acc']:.4f} after {summary['steps']} steps "
      f"({summary['cpu_seconds']} CPU seconds); pictures and last.npz in runs/example-cnn/")
