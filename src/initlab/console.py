"""What reaches the console: each event once, plainly. train.log keeps everything (Hydra's file
handler); library tips, chatter and warnings raised inside installed packages stay there."""

from __future__ import annotations

import logging
import warnings

# Lightning's INFO lines a user acts on (which device trains); its others are bookkeeping
LIGHTNING_CONSOLE = ("GPU available", "TPU available", "HPU available")
LIBRARY_PATHS = ("site-packages", "dist-packages")


class ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == "py.warnings":  # a warning raised inside a library: not the user's
            return not any(part in str(record.args[0] if record.args else record.msg)
                           for part in LIBRARY_PATHS)
        if record.name.startswith("lightning") and record.levelno < logging.WARNING:
            return record.getMessage().startswith(LIGHTNING_CONSOLE)
        return True


class ConsoleFormatter(logging.Formatter):
    """The message alone; warnings and errors keep their level in front."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name == "py.warnings":
            text = text.strip()
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


def use_job_logging() -> None:
    """In a Hydra job (the root logger has Hydra's console and file handlers): drop the console
    handler Lightning adds to its own logger (each of its lines would print twice) and route
    Python warnings through logging, so train.log keeps them and the filter sorts them."""
    if not logging.getLogger().hasHandlers():
        return
    import lightning  # noqa: F401  (adds its handler on import: import first, then remove it)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each library warning once per location, in train.log
    warnings.formatwarning = _one_line  # the stock format adds the source line and a newline


def _one_line(message, category, filename, lineno, line=None) -> str:
    return f"{filename}:{lineno}: {category.__name__}: {message}"


def say(line: str) -> None:
    """A line for the user: logged (console and train.log) where logging is set up, as in a
    Hydra job; printed otherwise, so a bare ``run(cfg)`` still tells its result."""
    if logging.getLogger().hasHandlers():
        logging.getLogger("initlab").info(line)
    else:
        print(line, flush=True)
