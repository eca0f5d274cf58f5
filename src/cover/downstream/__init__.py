"""downstream subpackage."""
