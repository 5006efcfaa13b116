"""hotr's logger ("hotr"), without importing logging before anything is worth logging.

Importing logging costs about 4 ms, a sixth of `import hotr`. A debug or info record can only
reach a handler the program configured, and configuring one means importing logging: until
then such records are dropped, as logging's default configuration (the root at WARNING) would
drop them. A warning or worse imports logging and goes through it, so it is shown as always.
"""

from __future__ import annotations

import sys

from ._threads import adopt

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging


def _logger() -> logging.Logger:
    import logging

    adopt()  # imported by now: logging imports threading
    return logging.getLogger("hotr")  # logging keeps it: the same object on every call


class _Logger:
    """The subset of logging.Logger hotr uses, resolved at each call."""

    def debug(self, msg: str, *args: object, exc_info: bool = False) -> None:
        if "logging" in sys.modules:
            _logger().debug(msg, *args, exc_info=exc_info)

    def info(self, msg: str, *args: object, exc_info: bool = False) -> None:
        if "logging" in sys.modules:
            _logger().info(msg, *args, exc_info=exc_info)

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        _logger().warning(msg, *args, exc_info=exc_info)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        _logger().error(msg, *args, exc_info=exc_info)

    def exception(self, msg: str, *args: object) -> None:
        _logger().exception(msg, *args)


logger = _Logger()
