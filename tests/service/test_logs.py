import logging

from service.logs import CHATTY, configure_logging


def test_libraries_start_up_chatter_is_shown_at_debug_only() -> None:
    try:
        configure_logging("info")
        assert all(logging.getLogger(name).getEffectiveLevel() == logging.WARNING for name in CHATTY)
        configure_logging("debug")
        assert all(logging.getLogger(name).isEnabledFor(logging.DEBUG) for name in CHATTY)
    finally:
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.NOTSET)
