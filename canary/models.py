"""Models arrive with the change-propagation issue."""
