"""Pure rules of notifications: which message an event causes, when it may go, retries."""
