"""methods subpackage."""
