"""TensorBoard logging with one events file per run."""

from __future__ import annotations

from lightning.pytorch.loggers import TensorBoardLogger


class RunTensorBoardLogger(TensorBoardLogger):
    """Lightning finalizes the logger after fit and again after test; the stock logger closes
    its writer each time, so the next write opens another events file. This one only flushes;
    ``close()`` ends the file once, when the run is over."""

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()

    def close(self) -> None:
        if self._experiment is not None:
            self.experiment.close()
