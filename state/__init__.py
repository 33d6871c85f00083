"""The customer context and how an event folds into it; on-disk stores come later."""
