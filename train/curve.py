"""The training curve: loss and test accuracy per epoch, as a PNG beside the checkpoint."""

from __future__ import annotations

from pathlib import Path


def training_curve(history: list[dict], path: Path) -> Path:
    """Loss and test accuracy per epoch, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (loss, acc) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    loss.plot(epochs, [r["loss"] for r in history], marker=".")
    loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="loss")
    acc.plot(epochs, [100 * r["test_accuracy"] for r in history], marker=".", color="tab:green")
    acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
