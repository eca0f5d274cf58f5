"""SeVR view pairs (docs/method.md §3).

The view generator in two styles: ``cover`` (:mod:`cover.views.base`) and the authors' release
(:mod:`cover.views.authors`).
"""

from cover.views.authors import authors_view_pair
from cover.views.base import (
    STYLES,
    ViewConfig,
    ViewGenerator,
    ViewPair,
    capture_range,
    gaussian_blur,
    tone_changes,
)

STYLES["authors"] = authors_view_pair

__all__ = ["STYLES", "ViewConfig", "ViewGenerator", "ViewPair", "capture_range", "gaussian_blur", "tone_changes"]
