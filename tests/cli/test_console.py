"""The cover script silences only warnings known to be harmless, by message; others stay visible."""

import warnings

from cover.cli.console import _one_line_warning, install_warning_filters

NOT_WRITABLE = (
    "The given NumPy array is not writable, and PyTorch does not support non-writable tensors. This means "
    "writing to this tensor will result in undefined behavior."
)  # torch's text (emitted once per process, so it is raised here by hand)


def test_only_known_harmless_warnings_are_silenced():
    saved = warnings.formatwarning
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            install_warning_filters()
            warnings.warn_explicit(NOT_WRITABLE, UserWarning, "torch/utils.py", 1, module="torch")
            warnings.warn_explicit("another torch warning", UserWarning, "torch/utils.py", 2, module="torch")
            warnings.warn("a cover warning\nover two lines", UserWarning, stacklevel=1)
            formatted = warnings.formatwarning(caught[-1].message, UserWarning, "x.py", 1)
    finally:
        warnings.formatwarning = saved
    assert [str(w.message) for w in caught] == ["another torch warning", "a cover warning\nover two lines"]
    assert formatted == "warning: a cover warning over two lines\n"
    assert _one_line_warning("several\n  lines") == "warning: several lines\n"
